"""Suite-wide guard: the whole test suite leaves the host as it found it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import FOREIGN_NETNS_PREFIXES, STRICT, iproute2_netns_dir

DEFAULT_STATE = Path("/var/lib/repeatr")


def _host_state() -> dict[str, list[str]]:
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    if not STRICT:
        # Other sessions on a shared dev machine mount tmpfs dirs and named netns
        # (`ip netns add` also makes /run/netns a mount point) while we run;
        # CI (strict) tolerates nothing.
        lines = [line for line in lines if not iproute2_netns_dir(line)]
    mounts = [f"{line.split()[4]} {line.split(' - ')[1].split()[0]}" for line in lines]
    if not STRICT:
        mounts = [
            m for m in mounts
            if not m.endswith(" tmpfs")
            and not m.startswith(tuple("/run/netns/" + p for p in FOREIGN_NETNS_PREFIXES))
        ]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = sorted(line.split()[0] for line in netns.stdout.splitlines() if line.strip())
    if not STRICT:
        names = [n for n in names if not n.startswith(FOREIGN_NETNS_PREFIXES)]
    state = {
        "mounts": sorted(mounts),
        "netns": names,
    }
    for sub in ("runs", "tmp"):
        d = DEFAULT_STATE / sub
        state[f"state/{sub}"] = sorted(os.listdir(d)) if d.is_dir() else []
    return state


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Mount table, network namespaces, work-dir root and cache temp area: same after the suite."""
    before = _host_state()
    yield
    after = _host_state()
    for key in before:
        added = sorted(set(after[key]) - set(before[key]))
        assert not added, f"the test suite left {key} behind: {added}"


# --- the vm executor: a chosen subset --------------------------------------------
#: Tests parametrised over every executor that also run on ``vm``. Each boots a
#: VM: ~2 s of one core under TCG on an idle host (much more on a loaded one),
#: so the vm tests in the whole suite stay within ~5 minutes on 2 cores. The
#: cases are picked so every part of the executor is covered once: stdio,
#: exit codes and signals, env, user, capabilities, hostname, network,
#: JobInvalid before the boot, read-only binds, outputs, limits; on asyncio
#: only (the executor's async code is the helper executors', tested on both).
#: ``tests/executors/test_vm.py`` adds what is the VM's own (boot deadline,
#: cancellation mid-boot, several checks per boot, the differential test).
#: ``REPEATR_VM_TESTS=all`` runs every case on vm as well.
VM_CASES = frozenset({
    "test_hello_stdout_and_stderr",  # stdio over the ports, line by line
    "test_self_kill",  # init's signal rules: the job is PID 1 (128+signal: the OOM case)
    "test_env_exactly_as_given",
    "test_capabilities_routine",  # uid 0 and 1000, the policy's capabilities
    "test_capabilities_all",  # within repeatr's bounding set, as on the host's kernel
    "test_pid_namespace",  # the job is PID 1 of its own pid namespace in the guest
    "test_hostname",
    "test_network",  # none: loopback only
    "test_missing_exec",  # JobInvalid before any boot
    "test_bad_cwd",
    "test_memory_exceeded_is_killed_and_reported",  # the guest cgroup's OOM kill
    "test_timeout_kills_the_job_on_time",  # from the job's start: qemu killed
    "test_disk_limit_gives_the_job_enospc_and_says_why",  # the ext4 shared into the guest
    "test_device_node_made_by_the_job_opens_nothing",  # the guest's /dev is nodev
    "test_fresh_proc_in_a_user_namespace_is_refused",  # no initramfs /proc in the job's ns
    "test_syscalls_newer_than_the_profile_fail_with_enosys",  # the guest kernel's table
    "test_pids_limit_stops_forks",
    "test_refuses_a_limit_it_cannot_enforce",
    "test_sigkill_parent_kills_job",  # no qemu or virtiofsd outlives repeatr
    "test_cancel_job_ignoring_sigterm",  # cancelling kills qemu: nothing outlives the run
    "test_killed_from_outside",  # skipped: the job's processes are the guest's
    "test_unprivileged_ping_on_the_bridge",  # bridge: the tap on the run's veth
})
#: Attacks (``tests/security``) run on ``vm``: one per kind of protection it
#: gives (its own processes and network stack, the shared root, device nodes,
#: read-only binds, privileges and seccomp).
VM_ATTACKS = frozenset({
    "host-path", "kill-host-process", "host-loopback", "ro-mount-write", "setuid-root",
    "mount", "ware-device-nodes",
})
#: Covered on vm elsewhere: exit codes, uid 1000, outputs and ownership, the
#: host disk's reserve (tests/executors/test_vm.py, tests/run/test_vm_differential.py).


def _vm_param(item: pytest.Item) -> dict[str, object] | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    params: dict[str, object] = callspec.params
    if "vm" in (params.get("executor"), params.get("name")):
        return params
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the vm cases not chosen above (said in the summary: "deselected")."""
    if os.environ.get("REPEATR_VM_TESTS") == "all":
        return  # every case on vm too (slow: a VM boot per case)
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        params = _vm_param(item)
        chosen = params is None or (
            params.get("anyio_backend", "asyncio") == "asyncio"
            and (
                params.get("name") in VM_ATTACKS
                if item.path.parent.name == "security"
                else getattr(item, "originalname", item.name) in VM_CASES
            )
        )
        (keep if chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
