"""The executor interface: one closed set of names, one abstract base.

An executor runs one job (argv, env, cwd, user, capabilities) in a filesystem
assembled from mount operations (``repeatr.assemble``). Each executor says
what it isolates (``capabilities()``), whether it can run on this host and
how to fix it if not (``preflight()``), and runs jobs with ``run()``, written
against anyio so it works under asyncio and trio. Implementations are
imported lazily by name (``load``).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path

import msgspec

from repeatr.assemble.ops import Mkdir, Op
from repeatr.errors import ExecutorError
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from repeatr.model.limits import LimitName, Limits


class ExecutorName(StrEnum):
    CHROOT = "chroot"
    NS = "ns"
    RUNC = "runc"
    CRUN = "crun"
    GVISOR = "gvisor"
    VM = "vm"


class Isolation(StrEnum):
    """Kernel namespaces an executor gives the job; ``kernel``: a kernel of its own (vm)."""

    MOUNT = "mount"
    PID = "pid"
    NET = "net"
    IPC = "ipc"
    UTS = "uts"
    KERNEL = "kernel"


#: Every namespace type an executor can give (all of ``Isolation`` but ``KERNEL``).
NAMESPACES = frozenset(
    {Isolation.MOUNT, Isolation.PID, Isolation.NET, Isolation.IPC, Isolation.UTS}
)


class Capabilities(msgspec.Struct, frozen=True):
    """What an executor isolates and enforces."""

    isolates: frozenset[Isolation]
    #: The policies it can give a job (``bridge`` needs ``none``: a namespace of its own).
    networks: frozenset[NetworkPolicy]
    job_is_pid1: bool  # the job is PID 1 of its own pid namespace (init signal semantics)
    hostname: bool  # can give the job its own hostname
    limits: frozenset[LimitName] = frozenset()  # resource limits it enforces
    sets_home: bool = False  # the runtime adds HOME to an env that lacks it (runc, crun, runsc)
    # The job runs on an application kernel (gVisor's Sentry), not the host's:
    # its processes are not host processes, /proc is the sandbox's (no
    # NoNewPrivs line), and a non-root job gets no ambient capabilities.
    user_space_kernel: bool = False
    last_capability: int | None = None  # highest capability it can grant (None: the kernel's)
    env_order: bool = True  # the job's environ is in the JobSpec's order (runsc reorders it)

    @property
    def host_processes(self) -> bool:
        """The job's processes are the host kernel's: in its /proc, killable from the host
        (not under gVisor's Sentry, not in a VM's guest kernel)."""
        return not self.user_space_kernel and Isolation.KERNEL not in self.isolates


class JobSpec(msgspec.Struct, frozen=True):
    """One job, ready to run: everything the executor needs, already defaulted.

    ``mounts`` are the filesystem (every overlay's upper/work dirs live in
    ``rw``: with ``limits.disk`` the helper mounts a filesystem of that size
    there, see ``repeatr.linux.scratch``); ``cradle`` steps run after them
    (``repeatr.assemble.cradle``).
    The merged root is ``workdir/root``. ``capabilities`` are names
    (``CAP_KILL`` or ``kill``; ``ALL`` for every one).
    """

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: Path
    mounts: tuple[Op, ...]
    cradle: tuple[Mkdir, ...] = ()
    cwd: str = "/"
    uid: int = 1000
    gid: int = 1000
    hostname: str | None = None
    capabilities: frozenset[str] = msgspec.field(default_factory=frozenset)
    # The policy, and for ``bridge`` the namespace repeatr.net prepared (a
    # /run/netns path or /proc/<pid>/ns/net) to run the job in.
    network: JobNetwork = msgspec.field(default_factory=JobNetwork)
    limits: Limits | None = None
    # The default seccomp profile (``repeatr.executors.seccomp``), with the
    # conditional rules of ``capabilities``; False only for ``sysad``.
    seccomp: bool = True
    # A terminal (the slave side of a pty the caller relays) for an interactive
    # job (``repeatr twerk``): its stdin, stdout, stderr and controlling tty.
    tty: int | None = None
    # The container paths that will be packed: a mount they are at or under
    # stays for packing; every other mount of repeatr's is taken out first
    # (``repeatr.assemble.release``).
    outputs: tuple[str, ...] = ()

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    @property
    def rw(self) -> Path:
        """Where the overlays' upper and work dirs go (the job's writable disk)."""
        return self.workdir / "rw"


class JobResult(msgspec.Struct, frozen=True):
    exit_code: int  # 128+N when killed by signal N
    signal: int | None
    duration: float  # seconds from sending the helper the spec to the job's exit
    timed_out: bool = False  # killed because limits.timeout passed
    oom_killed: bool = False  # the memory limit was hit and the kernel killed a process
    #: "limit": limits.disk was used up (the job's writes got ENOSPC);
    #: "reserve": killed because the host's disk fell to its last reserve.
    disk: str = ""

    @property
    def reason(self) -> str | None:
        """Why the job was stopped (or failed), when repeatr's limits did it."""
        if self.timed_out:
            return "timeout"
        if self.oom_killed:
            return "out of memory"
        if self.disk == "reserve":
            return "disk reserve"
        if self.disk == "limit" and self.exit_code != 0:
            return "disk limit"
        return None


OutputCallback = Callable[[str, bytes], Awaitable[None]]
"""Called with ("stdout" | "stderr", one line including its newline)."""

FinishedCallback = Callable[[JobResult, Path], Awaitable[None]]
"""Called after the job exits while the mounts still exist, with a host path
viewing the container root (``/proc/self/fd/<fd of the helper's root>/<root>``:
``repeatr.linux.procroot``, never by its pid). Packing through it
must resolve output paths *inside* that root without following symlinks out of
it (``repeatr.linux.libc.openat2`` with RESOLVE_IN_ROOT on a descriptor of it)."""


class Executor(abc.ABC):
    name: ExecutorName

    def __init__(self, *, on_debug: Callable[[str], None] | None = None) -> None:
        #: Told the exact command lines that run (``--debug``), to replay by hand.
        self.on_debug = on_debug

    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    def known_capabilities(self) -> Capabilities:
        """``capabilities()``, asked of the host once per executor object.

        Capabilities look at the host (cgroup controllers, loop devices,
        ``mkfs``): a few system calls, twice a run. A batch shares one executor
        per kind of job (``repeatr.runner.run.ExecutorChooser``), so it asks once.
        """
        caps: Capabilities | None = self.__dict__.get("_known_capabilities")
        if caps is None:
            caps = self._known_capabilities = self.capabilities()
        return caps

    def job_mounts(self, job: JobSpec) -> tuple[Op, ...]:
        """The mount operations this executor makes of ``job.mounts`` (``--debug`` shows them)."""
        return job.mounts

    @abc.abstractmethod
    def preflight(self) -> None:
        """Raise ExecutorError saying what is missing and how to fix it."""

    @abc.abstractmethod
    async def run(
        self,
        job: JobSpec,
        *,
        on_output: OutputCallback,
        on_finished: FinishedCallback | None = None,
    ) -> JobResult:
        """Run ``job``; raise AssemblyError / JobInvalid / ExecutorError if it cannot start."""


_IMPLEMENTATIONS: dict[ExecutorName, str] = {
    ExecutorName.CHROOT: "repeatr.executors.chroot:ChrootExecutor",
    ExecutorName.NS: "repeatr.executors.ns:NsExecutor",
    ExecutorName.RUNC: "repeatr.executors.runc:RuncExecutor",
    ExecutorName.CRUN: "repeatr.executors.crun:CrunExecutor",
    ExecutorName.GVISOR: "repeatr.executors.gvisor:GvisorExecutor",
    ExecutorName.VM: "repeatr.executors.vm:VmExecutor",
}


def check_limits(executor: Executor, limits: Limits | None) -> None:
    """ExecutorError when ``executor`` cannot enforce every limit set in ``limits``."""
    if limits is None:
        return
    missing = sorted(limits.names() - executor.capabilities().limits)
    if not missing:
        return
    able = [
        str(n) for n in available_names()
        if set(missing) <= load(n)().capabilities().limits
    ]
    raise ExecutorError(
        f"executor {executor.name} cannot enforce the limit(s) {', '.join(missing)}",
        hint=f"executors that can: {', '.join(able) or 'none'}; or drop the limit",
    )


def available_names() -> list[ExecutorName]:
    """Executors implemented so far (whether they pass preflight is another matter)."""
    return list(_IMPLEMENTATIONS)


def load(name: ExecutorName | str) -> type[Executor]:
    """The executor class called ``name``, imported only now."""
    try:
        key = ExecutorName(name)
    except ValueError:
        known = ", ".join(n.value for n in ExecutorName)
        raise ExecutorError(f"unknown executor {name!r}", hint=f"one of {known}") from None
    if key not in _IMPLEMENTATIONS:
        raise ExecutorError(
            f"executor {key} is not implemented yet",
            hint=f"use one of {', '.join(_IMPLEMENTATIONS)}",
        )
    module, _, cls = _IMPLEMENTATIONS[key].partition(":")
    found: type[Executor] = getattr(importlib.import_module(module), cls)
    return found
