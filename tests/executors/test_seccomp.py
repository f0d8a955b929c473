"""The default seccomp profile (``repeatr.executors.seccomp``), on every executor.

Real jobs in real namespaces: a job under ``routine`` (or ``governor``)
cannot create a user namespace, or mount in one, on any executor; the same
job with ``seccomp=False`` (what ``sysad`` gets) can, on the executors whose
kernel interface would otherwise allow it, so the filter is what stops it.
"""

from __future__ import annotations

import base64
import errno
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from repeatr.executors import seccomp
from repeatr.executors.base import ExecutorName, Isolation, JobSpec
from repeatr.executors.crun import BPF_ANNOTATION, CrunExecutor
from repeatr.executors.oci import config
from repeatr.linux import libseccomp
from repeatr.linux.capability import CAPABILITIES
from repeatr.model import policy
from tests.executors.conftest import Jobs, usable
from tests.rootfs import ScratchArea

ROUTINE = frozenset(policy.capabilities(policy.Policy.ROUTINE))
GOVERNOR = frozenset(policy.capabilities(policy.Policy.GOVERNOR))
# A user namespace with root mapped to the job's uid, and a mount in it.
USERNS_MOUNT = "unshare -U -r -m sh -c 'mount -t tmpfs none /tmp && echo MOUNTED'"
# Executors on which, without the filter, the job could do it (gvisor: the
# Sentry's /proc has no setgroups file for busybox's unshare -r).
OPEN_WITHOUT_FILTER = (ExecutorName.CHROOT, ExecutorName.NS, ExecutorName.RUNC, ExecutorName.CRUN)
NETWORK_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW"})


def granted(jobs: Jobs, caps: frozenset[str]) -> frozenset[str]:
    """``caps`` as the executor can grant them: chroot shares the host's network
    and refuses the network capabilities (tests/executors/test_conformance.py)."""
    if Isolation.NET in jobs.executor.capabilities().isolates:
        return caps
    if "ALL" in caps:
        caps = frozenset(CAPABILITIES)
    return caps - NETWORK_CAPS
PROBE_C = Path(__file__).parent / "seccomp_probe" / "probe.c"
CLONE_NEWUSER = 0x10000000


# --- the profile as data ------------------------------------------------------
@pytest.mark.parametrize("machine", sorted(seccomp.ARCHITECTURES))
def test_every_syscall_name_resolves(machine: str) -> None:
    """A misspelt name would silently allow nothing (libseccomp skips unknown names).

    libseccomp knows every architecture's table, so each is checked here.
    """
    profile = seccomp.for_capabilities(["ALL"], machine=machine)
    unknown = [
        name
        for rule in profile.rules
        for name in rule.names
        if all(
            libseccomp.syscall_number(name, arch) is None
            for arch in (rule.arches or profile.arches) if arch in profile.arches
        )
    ]
    assert profile.arches == seccomp.ARCHITECTURES[machine]
    assert unknown == []


def test_capability_rules_follow_the_policy() -> None:
    def allowed(caps: frozenset[str]) -> set[str]:
        rules = seccomp.for_capabilities(caps).rules
        return {n for r in rules if r.errno is None and not r.args for n in r.names}

    routine, governor = allowed(ROUTINE), allowed(GOVERNOR)
    assert "chroot" not in routine and "chroot" in governor
    for name in ("unshare", "setns", "mount", "umount2", "pivot_root", "keyctl", "add_key",
                 "request_key", "bpf", "perf_event_open", "userfaultfd", "kexec_load",
                 "init_module", "open_by_handle_at", "io_uring_setup", "clone3"):
        assert name not in governor, name
    clone3 = [r for r in seccomp.for_capabilities(GOVERNOR).rules if "clone3" in r.names]
    assert [r.errno for r in clone3] == [errno.ENOSYS]  # libcs fall back to clone
    assert policy.seccomp(policy.Policy.ROUTINE) and policy.seccomp(policy.Policy.GOVERNOR)
    assert not policy.seccomp(policy.Policy.SYSAD)


def _job(workdir: Path, **kw: Any) -> JobSpec:
    return JobSpec(argv=("true",), env=(), workdir=workdir, mounts=(), **kw)


def test_oci_config_has_the_profile_unless_unfiltered(tmp_path: Path) -> None:
    cfg = config(_job(tmp_path, capabilities=ROUTINE), "/x")
    prof = cfg["linux"]["seccomp"]
    assert (prof["defaultAction"], prof["defaultErrnoRet"]) == ("SCMP_ACT_ERRNO", errno.EPERM)
    assert prof["architectures"][0] == "SCMP_ARCH_X86_64"
    assert prof == seccomp.for_capabilities(ROUTINE).oci()
    unfiltered = config(_job(tmp_path, capabilities=frozenset({"ALL"}), seccomp=False), "/x")
    assert "seccomp" not in unfiltered["linux"]


def test_compiled_program_is_cached(tmp_path: Path) -> None:
    profile = seccomp.for_capabilities(ROUTINE)
    program = profile.bpf(cache_dir=tmp_path)
    (cached,) = tmp_path.iterdir()
    assert cached.read_bytes() == program == seccomp.compile_bpf(profile)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # BPF_MAXINSNS
    cached.write_bytes(b"torn")  # a damaged entry is compiled again, not installed
    seccomp._cached_bpf.cache_clear()
    assert profile.bpf(cache_dir=tmp_path) == program


def test_cache_that_others_can_write_is_not_trusted(tmp_path: Path) -> None:
    profile = seccomp.for_capabilities(ROUTINE)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    allow_all = struct.pack("=HBBI", 0x06, 0, 0, libseccomp.ACT_ALLOW)  # BPF: ret ALLOW
    (shared / f"{seccomp.cache_key(profile)}.bpf").write_bytes(allow_all)
    assert profile.bpf(cache_dir=shared) == seccomp.compile_bpf(profile)


# --- real jobs ------------------------------------------------------------------
pytestmark = pytest.mark.root


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("caps", "filtered", "status"),
    [(ROUTINE, True, "2"), (GOVERNOR, True, "2"), (frozenset({"ALL"}), False, "0")],
    ids=["routine", "governor", "sysad"],
)
async def test_seccomp_status(jobs: Jobs, caps: frozenset[str], filtered: bool, status: str) -> None:
    out = await jobs.sh("grep '^Seccomp:' /proc/self/status", uid=0, gid=0,
                        capabilities=granted(jobs, caps), seccomp=filtered)
    assert out.stdout.split() == [b"Seccomp:", status.encode()]


@pytest.mark.anyio
async def test_root_job_cannot_create_a_user_namespace(jobs: Jobs) -> None:
    script = "unshare -U true && echo CREATED"
    out = await jobs.sh(script, uid=0, gid=0, capabilities=ROUTINE)
    assert b"CREATED" not in out.stdout
    assert b"Operation not permitted" in out.stderr
    if jobs.executor.name in OPEN_WITHOUT_FILTER:
        control = await jobs.sh(script, uid=0, gid=0, capabilities=ROUTINE, seccomp=False)
        assert control.stdout == b"CREATED\n"


@pytest.mark.anyio
async def test_job_cannot_mount_in_a_user_namespace(jobs: Jobs) -> None:
    out = await jobs.sh(USERNS_MOUNT, capabilities=ROUTINE)
    assert out.stdout == b""
    assert b"unshare(0x10020000): Operation not permitted" in out.stderr
    if jobs.executor.name in OPEN_WITHOUT_FILTER:
        control = await jobs.sh(USERNS_MOUNT, capabilities=ROUTINE, seccomp=False)
        assert control.stdout == b"MOUNTED\n"


@pytest.mark.anyio
async def test_governor_can_still_chroot(jobs: Jobs) -> None:
    governor = granted(jobs, GOVERNOR)
    out = await jobs.sh("chroot / true && echo OK", uid=0, gid=0, capabilities=governor)
    assert out.stdout == b"OK\n", out.stderr
    denied = await jobs.sh("chroot / true && echo OK", uid=0, gid=0, capabilities=ROUTINE)
    assert denied.stdout == b""


@pytest.mark.anyio
async def test_ordinary_workload_under_the_profile(jobs: Jobs) -> None:
    """Processes, pipes, files, links, signals, time: what builds do."""
    script = (
        "set -e; mkdir -p d/e; echo hi > d/e/f; ln -s f d/e/l; chmod 600 d/e/f; "
        "tar cf - d | tar tf - | sort | tr '\\n' ' '; echo; "
        "sha256sum d/e/f | cut -c1-8; (sleep 0.1 & wait); kill -0 $$; "
        "date +%Y >/dev/null; cat /proc/self/stat >/dev/null; echo done"
    )
    out = await jobs.sh(script, capabilities=ROUTINE)
    assert out.result.exit_code == 0, out.stderr
    assert out.stdout.decode().splitlines() == ["d/ d/e/ d/e/f d/e/l ", "98ea6e4f", "done"]


@pytest.mark.anyio
async def test_debug_says_the_profile_is_applied(jobs: Jobs) -> None:
    said: list[str] = []
    jobs.executor.on_debug = said.append
    governor = granted(jobs, GOVERNOR)
    await jobs.run(jobs.job("true", capabilities=governor))
    assert [m for m in said if m.startswith("seccomp:")] == [
        seccomp.for_capabilities(governor).describe()
    ]
    said.clear()
    await jobs.run(jobs.job("true", capabilities=granted(jobs, frozenset({"ALL"})), seccomp=False))
    assert not [m for m in said if m.startswith("seccomp:")]


class _AllowAllInConfig(CrunExecutor):
    """crun whose config.json's linux.seccomp allows everything: only the annotation denies."""

    def config(self, job: JobSpec, cgroups_path: str) -> dict[str, Any]:
        cfg = super().config(job, cgroups_path)
        cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
        return cfg


@pytest.mark.anyio
@pytest.mark.runtime("crun")
async def test_crun_installs_the_compiled_program(area: ScratchArea, workdir: Path) -> None:
    usable("crun")
    job_cfg = CrunExecutor().config(_job(workdir, capabilities=ROUTINE), "/x")
    program = base64.b64decode(job_cfg["annotations"][BPF_ANNOTATION])
    assert program == seccomp.for_capabilities(ROUTINE).bpf()
    jobs = Jobs(area, workdir, _AllowAllInConfig())
    out = await jobs.sh(USERNS_MOUNT, capabilities=ROUTINE)
    assert out.stdout == b""
    assert b"Operation not permitted" in out.stderr


# --- raw syscalls through every ABI (a static C probe) ---------------------------
@pytest.fixture(scope="session")
def probe_layer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A lower layer holding /bin/probe, built from probe.c with ``gcc -static``."""
    if os.uname().machine != "x86_64":
        pytest.skip("the probe makes x86 system calls")
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("the seccomp tests need gcc and libc6-dev (scripts/setup installs them)")
    layer = tmp_path_factory.mktemp("probe")
    layer.chmod(0o755)  # the root of the job's overlay: it must stay traversable
    (layer / "bin").mkdir()
    subprocess.run(
        [gcc, "-static", "-O1", "-Wall", "-Werror", "-o", os.fspath(layer / "bin" / "probe"),
         os.fspath(PROBE_C)],
        check=True,
    )
    yield layer


async def _probe(jobs: Jobs, layer: Path, *calls: str, **kw: Any) -> list[str]:
    out = await jobs.run(jobs.job("/bin/probe", *calls, lowers=(layer,), **kw))
    assert out.result.exit_code == 0, out.stderr
    return out.stdout.decode().split()


@pytest.mark.anyio
async def test_every_abi_is_filtered(jobs: Jobs, probe_layer: Path) -> None:
    """unshare(CLONE_NEWUSER) through x86_64, i386 (int 0x80) and x32: all EPERM."""
    calls = (f"64:272:{CLONE_NEWUSER}", f"32:310:{CLONE_NEWUSER}", f"x32:272:{CLONE_NEWUSER}")
    expected = ["EPERM"] * 3
    if jobs.executor.capabilities().user_space_kernel:
        expected[1] = "ENOSYS"  # gVisor's Sentry has no 32-bit ABI at all
    assert await _probe(jobs, probe_layer, *calls, capabilities=ROUTINE) == expected
    if jobs.executor.name in OPEN_WITHOUT_FILTER:
        # one call: a process in a new, unmapped user namespace cannot make another
        unfiltered = await _probe(jobs, probe_layer, calls[1], capabilities=ROUTINE,
                                  seccomp=False)
        assert unfiltered == ["ok"]


@pytest.mark.anyio
async def test_syscalls_newer_than_the_profile_fail_with_enosys(
    jobs: Jobs, probe_layer: Path
) -> None:
    """As under runc: a libc falls back from ENOSYS, not from EPERM."""
    if jobs.executor.capabilities().user_space_kernel:
        pytest.skip("gVisor's Sentry applies the OCI profile with its own syscall table")
    calls = (
        "64:268",  # fchmodat: allowed, so the kernel reads its (NULL) path
        "64:452",  # fchmodat2: allowed too, on a kernel that has it (6.6+)
        "64:250",  # keyctl: known, denied
        "64:470", "64:1000", "32:470",  # newer than anything the profile names
    )
    # The job's kernel, not the host's: a VM's guest kernel may be older.
    out = await jobs.run(jobs.job("sh", "-c", 'uname -r; exec /bin/probe "$@"', "sh", *calls,
                                  lowers=(probe_layer,), capabilities=ROUTINE))
    assert out.result.exit_code == 0, out.stderr
    release, *got = out.stdout.decode().split()
    has_fchmodat2 = tuple(int(x) for x in release.split(".")[:2]) >= (6, 6)
    assert got == ["EFAULT", "EFAULT" if has_fchmodat2 else "ENOSYS", "EPERM",
                   "ENOSYS", "ENOSYS", "ENOSYS"]
