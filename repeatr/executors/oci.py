"""OCI runtime executors (runc, crun, runsc): the bundle and the runtime driver.

The sandbox helper (``mode="oci"``) assembles the root in its private mount
namespace exactly as for ``ns`` and ``chroot``, minus ``/proc`` and ``/dev``:
those become OCI mounts the runtime makes in the container's own namespaces.
The runtime runs as the helper's child, so it sees the assembled root
(``root.path`` in ``config.json``); ``repeatr.executors.oci_sandbox`` drives
it and tears it down.

Per run, under the run's workdir (never in the container root):
``oci/config.json`` (the bundle: made deterministically here, sent in the
helper's spec, written by the helper), ``oci/state``
(the runtime's ``--root``: removed at teardown), ``oci/pid`` and ``oci/log``.
The container ID and the ``cgroupsPath`` are the same flat
``repeatr-<pid>-<hex>`` name ``repeatr.linux.cgroups`` uses, so the next
run's gc finds what a killed one left.

``config.json`` follows ``runc spec``'s defaults where we have no reason to
differ: namespaces pid, ipc, uts, mount (and network unless ``host``; a
prepared one by path for ``bridge``: ``JobSpec.network.netns``), the runtime's own
minimal /dev (null, zero, full, random, urandom, tty, devpts, shm, mqueue),
masked and read-only /proc paths (``repeatr.assemble.ops``: the same ones the
ns and chroot executors apply), all devices denied in the device cgroup
(the runtime adds its defaults back), the default seccomp profile as
``linux.seccomp`` (``repeatr.executors.seccomp``; none for ``sysad``).
The job's capabilities go into all five sets (bounding, effective, permitted, inheritable, ambient),
limited to what this host's bounding set has (no CAP_SYS_RESOURCE here):
asking runc for more fails the run. Every rlimit is ours
(``repeatr.linux.rlimits``: not the invoker's, which the runtime would pass
on), never above the host's hard limit. The env keeps
the job's order; note that every runtime adds ``HOME`` when the env lacks
it (``Capabilities.sets_home``). Limits become ``linux.resources``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar, Literal

from repeatr.assemble.ops import MASKED_PATHS, READONLY_PATHS, Dev, Op, Proc
from repeatr.errors import ExecutorError
from repeatr.executors import seccomp
from repeatr.executors._preflight import require_filesystem, require_namespaces, require_root
from repeatr.executors.base import (
    NAMESPACES,
    Capabilities,
    FinishedCallback,
    JobResult,
    JobSpec,
    OutputCallback,
)
from repeatr.executors.helper import HelperExecutor, cgroup_limits
from repeatr.executors.protocol import NetworkPolicy, OciCommands
from repeatr.linux import capability
from repeatr.linux.sysctl import NETNS_SYSCTLS

OCI_VERSION = "1.0.2"
CPU_PERIOD_US = 100_000


def capability_names(requested: frozenset[str], limit: int | None = None) -> list[str]:
    """``CAP_*`` names for ``requested`` (``ALL`` allowed), within what the host can give
    (and at most capability number ``limit``)."""
    last = capability.running_last_cap()
    if limit is not None:
        last = min(last, limit)
    numbers = capability.grantable(requested, last_cap=last)
    by_number = {n: name for name, n in capability.CAPABILITIES.items()}
    return [by_number[n] for n in sorted(numbers) if n in by_number]


def oci_mounts(ops: tuple[Op, ...]) -> list[dict[str, Any]]:
    """The runtime's mounts for our Proc and Dev operations."""
    out: list[dict[str, Any]] = []
    for op in ops:
        if isinstance(op, Proc):
            out.append({"destination": op.dest, "type": "proc", "source": "proc",
                        "options": op.options().split(",")})
        elif isinstance(op, Dev):
            d = op.dest.rstrip("/")
            out += [
                {"destination": op.dest, "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": f"{d}/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": f"{d}/shm", "type": "tmpfs", "source": "shm",
                 "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
                {"destination": f"{d}/mqueue", "type": "mqueue", "source": "mqueue",
                 "options": ["nosuid", "noexec", "nodev"]},
            ]
    return out


def resources(job: JobSpec) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if job.limits is None:
        return res
    if (mem := job.limits.memory_bytes()) is not None:
        res["memory"] = {"limit": mem, "swap": mem}  # v1: memsw = memory, so no swap
    if job.limits.pids is not None:
        res["pids"] = {"limit": job.limits.pids}
    if job.limits.cpu is not None:
        quota = max(1000, round(job.limits.cpu * CPU_PERIOD_US))
        res["cpu"] = {"quota": quota, "period": CPU_PERIOD_US}
    return res


def oci_rlimits() -> list[dict[str, Any]]:
    """Every rlimit the job gets (``repeatr.linux.rlimits``), as ``process.rlimits``:
    one left out would be the runtime's, i.e. the invoker's."""
    from repeatr.linux.rlimits import INF, job_rlimits

    def oci(value: int) -> int:
        return (1 << 64) - 1 if value == INF else value

    return [
        {"type": name, "hard": oci(hard), "soft": oci(soft)} for name, soft, hard in job_rlimits()
    ]


def config(job: JobSpec, cgroups_path: str, *, last_cap: int | None = None) -> dict[str, Any]:
    """The bundle's config.json for ``job`` (a dict; key order is stable)."""
    caps = capability_names(job.capabilities, last_cap)
    namespaces: list[dict[str, str]] = [
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
    ]
    if job.network.netns is not None:
        namespaces.append({"type": "network", "path": job.network.netns})
    elif job.network.own_namespace:
        namespaces.append({"type": "network"})
    cfg: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": job.uid, "gid": job.gid},
            "args": list(job.argv),
            "env": [f"{k}={v}" for k, v in job.env],
            "cwd": job.cwd,
            "capabilities": {
                k: caps for k in ("bounding", "effective", "permitted", "inheritable", "ambient")
            },
            "rlimits": oci_rlimits(),
            "noNewPrivileges": True,
        },
        "root": {"path": os.fspath(job.root), "readonly": False},
        "mounts": oci_mounts(job.mounts),
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path,
            "resources": resources(job),
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
    if job.seccomp:
        cfg["linux"]["seccomp"] = seccomp.for_capabilities(caps).oci()
    if job.network.own_namespace:
        # Its own network namespace: unprivileged ping, as repeatr.net sets it.
        cfg["linux"]["sysctl"] = dict(NETNS_SYSCTLS)
    if job.hostname:
        cfg["hostname"] = job.hostname
    return cfg


class OciExecutor(HelperExecutor):
    """An executor whose container is made by an OCI runtime binary."""

    binary: ClassVar[str]  # the runtime's command name
    style: ClassVar[Literal["create", "run"]] = "create"
    hide_cgroup2: ClassVar[bool] = False  # crun 1.8.1 and hybrid cgroups (host-notes)

    def __init__(self, *, runtime: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.runtime = runtime  # an explicit path; else looked up in PATH

    # --- host -------------------------------------------------------------------
    def runtime_path(self) -> str:
        path = self.runtime or shutil.which(self.binary)
        if path is None:
            raise ExecutorError(
                f"{self.binary} is not installed (not in PATH)",
                hint=f"install it (Debian: `apt-get install {self.package()}`)",
            )
        return path

    def package(self) -> str:
        return self.binary

    def version(self) -> str:
        """The runtime's ``--version`` first line; ExecutorError if it will not run."""
        import tempfile

        path = self.runtime_path()
        # A throwaway --root: `crun --version` creates its default rundir (/run/crun) otherwise.
        with tempfile.TemporaryDirectory(prefix="repeatr-version-") as tmp:
            try:
                out = subprocess.run(
                    [path, "--root", os.path.join(tmp, "state"), "--version"],
                    capture_output=True, text=True, timeout=10, check=True,
                ).stdout
            except (OSError, subprocess.SubprocessError) as e:
                raise ExecutorError(f"{path} --version failed: {e}") from e
        return out.splitlines()[0].strip() if out.strip() else "unknown"

    def preflight(self) -> None:
        require_root(self.name)
        require_namespaces(["mnt", "pid", "uts", "ipc", "net"])
        require_filesystem("overlay", "load the module with `modprobe overlay`")
        self.runtime_path()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=NAMESPACES,
            networks=frozenset({NetworkPolicy.NONE, NetworkPolicy.HOST}),
            job_is_pid1=True,
            hostname=True,
            limits=cgroup_limits(),
            sets_home=True,
        )

    # --- the runtime's command lines ------------------------------------------------
    def global_args(self, job: JobSpec, state: Path, log: Path) -> list[str]:
        return [self.runtime_path(), "--root", os.fspath(state), "--log", os.fspath(log)]

    def commands(self, job: JobSpec, bundle: Path, cid: str, config: str) -> OciCommands:
        state, log, pid_file = bundle / "state", bundle / "log", bundle / "pid"
        g = self.global_args(job, state, log)
        return OciCommands(
            name=self.binary,
            bundle=os.fspath(bundle),
            config=config,
            style=self.style,
            create=[*g, "create", "--bundle", os.fspath(bundle),
                    "--pid-file", os.fspath(pid_file), cid],
            start=[*g, "start", cid],
            run=[*g, "run", "--bundle", os.fspath(bundle), cid],
            delete=[*g, "delete", "--force", cid],
            state=os.fspath(state),
            log=os.fspath(log),
            pid_file=os.fspath(pid_file),
            cgroup=cid,
            hide_cgroup2=self.hide_cgroup2,
        )

    def seccomp_program(self, job: JobSpec) -> bytes | None:
        """None: the runtime applies the profile, from ``config.json``."""
        self.seccomp_profile(job)  # its --debug line
        return None

    def config(self, job: JobSpec, cgroups_path: str) -> dict[str, Any]:
        return config(job, cgroups_path, last_cap=self.known_capabilities().last_capability)

    def runtime_mountpoints(self, job: JobSpec) -> list[str]:
        """Where the runtime mounts in the root: the helper makes these first, so
        it can remove them before packing (``repeatr.assemble.release``)."""
        dests = sorted({m["destination"] for m in oci_mounts(job.mounts)})
        return [d for d in dests if not any(d.startswith(o.rstrip("/") + "/") for o in dests)]

    def bundle_dir(self, job: JobSpec) -> Path:
        return job.workdir / "oci"

    def helper_mounts(self, job: JobSpec) -> tuple[Op, ...]:
        """``/proc`` and ``/dev`` are the runtime's (``config.json``), the rest the helper's."""
        return tuple(op for op in job.mounts if not isinstance(op, Proc | Dev))

    def oci_commands(self, job: JobSpec, cgroup: str) -> OciCommands:
        """The bundle's ``config.json`` and the runtime's command lines over it.

        The helper writes the bundle (``oci_sandbox.write_bundle``): the spec
        holds everything, so ``--debug``'s replay works after the run.
        """
        cfg = self.config(job, "/" + cgroup)
        return self.commands(job, self.bundle_dir(job), cgroup, json.dumps(cfg, indent=1))

    async def run(
        self,
        job: JobSpec,
        *,
        on_output: OutputCallback,
        on_finished: FinishedCallback | None = None,
    ) -> JobResult:
        try:
            return await super().run(job, on_output=on_output, on_finished=on_finished)
        finally:
            shutil.rmtree(self.bundle_dir(job), ignore_errors=True)

