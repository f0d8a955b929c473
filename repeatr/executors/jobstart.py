"""The start of an ``ns`` or ``chroot`` job: the helper's side of ``repeatr.linux._jobstart``.

The job is started by compiled code (``repeatr/linux/_jobstart.c``) with
``clone(CLONE_VM | CLONE_VFORK)``, not by a fork of the helper's interpreter:
a fork copied the page tables of ~25 MB of interpreter, the child then
faulted copy-on-write pages in as it ran Python, and its ``execve`` tore the
copy down again (~4–5 ms of CPU a job, measured: docs/performance.md). The
child does what the Python job child did, in the same order (the C file
lists it); this module prepares everything it needs before the clone, so
the child allocates nothing: the argv and env arrays, the exec candidates
(the lookup itself stays in the child, as the job's user, after pivot_root),
descriptors of the late mounts' mount points and of the cgroups'
``cgroup.procs``, the capability mask and the seccomp program.

A failure in the child comes back on the error pipe as (step, errno, index);
:func:`failure_error` makes it the error the Python job child raised for
the same failure (the category and message the parent reports).
"""

from __future__ import annotations

import errno
import os
import sys

from repeatr.assemble.ops import MaskPath, Op, Proc, Root
from repeatr.errors import AssemblyError, ExecutorError, JobInvalid
from repeatr.executors.lookup import DEFAULT_PATH
from repeatr.linux import _jobstart, capability

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.executors.protocol import Spec
    from repeatr.linux.cgroups import Group

#: The C child's steps (``enum step``, numbered from 1): the call each failed in.
STEPS = (
    "write(cgroup.procs)", "dup2(stdin)", "setsid", "ioctl(TIOCSCTTY)", "prctl(PR_SET_PDEATHSIG)",
    "keyctl(KEYCTL_JOIN_SESSION_KEYRING)", "sigaction", "unshare(CLONE_NEWNS)", "mount(proc)",
    "open(proc)", "mask", "read-only", "pivot_root", "capabilities", "setresuid/setresgid",
    "prctl(PR_SET_NO_NEW_PRIVS)", "chdir(cwd)", "exec: not executable", "exec: no such file",
    "exec: not in PATH", "seccomp", "execve", "close_range(CLOSE_RANGE_CLOEXEC)",
    "write(oom_score_adj)",
)
STEP_MASK, STEP_READONLY = STEPS.index("mask") + 1, STEPS.index("read-only") + 1
STEP_CWD, STEP_EXEC = STEPS.index("chdir(cwd)") + 1, STEPS.index("execve") + 1
STEP_PROC_OPEN = STEPS.index("open(proc)") + 1
STEP_NOT_EXECUTABLE = STEPS.index("exec: not executable") + 1
STEP_NO_FILE = STEPS.index("exec: no such file") + 1
STEP_NOT_IN_PATH = STEPS.index("exec: not in PATH") + 1
#: Where the exec errors a formula can cause end: the job's fault, not the host's.
_EXEC_INVALID = (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR, errno.ELOOP)


class JobStart:
    """What one job's start needs, prepared in the helper; ``close`` its descriptors after."""

    def __init__(
        self, spec: Spec, root: Root, late: list[Op], group: Group | None, last_cap: int
    ) -> None:
        self.spec = spec
        self.root = root
        self.last_cap = last_cap
        env = {k: v for k, v in spec.env}
        self.search = env.get("PATH", DEFAULT_PATH)
        name = spec.argv[0]
        self.name = name
        if "/" in name:
            self.candidates = [name if name.startswith("/") else os.path.join(spec.cwd, name)]
        else:
            self.candidates = [os.path.join(d or spec.cwd, name) for d in self.search.split(":")]
        self.envp = [os.fsencode(f"{k}={v}") for k, v in env.items()]
        self.fds: list[int] = []
        self.procs: list[Proc] = [op for op in late if isinstance(op, Proc)]
        if len(self.procs) != len(late):
            raise ExecutorError(f"late mounts other than /proc: {late!r}")
        self.hardening = [list(proc.hardening()) for proc in self.procs]
        try:
            pairs = zip(self.procs, self.hardening, strict=True)
            self.proc_args = [self._proc(proc, ops) for proc, ops in pairs]
            self.cgroup_fds = [
                self._open(os.path.join(d, "cgroup.procs"), os.O_WRONLY)
                for d in (group.dirs if group is not None else ())
            ]
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, flags: int) -> int:
        fd = os.open(path, flags | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def _proc(
        self, proc: Proc, hardening: list[Op]
    ) -> tuple[bytes, bytes | None, list[tuple[bytes, bool]]]:
        parts = [p for p in proc.dest.split("/") if p]
        if not parts:
            raise AssemblyError(f"{proc.describe()}: not on the root itself")
        base = "/" + "/".join(parts) + "/"
        entries = [
            (os.fsencode(op.target.removeprefix(base)), isinstance(op, MaskPath))
            for op in hardening
        ]
        data = os.fsencode(f"hidepid={proc.hidepid}") if proc.hidepid else None
        return os.fsencode("/".join(parts)), data, entries

    def start(self, stdin: int | None, errw: int, close: list[int]) -> int:
        """Start the job; its pid. ``stdin``: None for an interactive job (its pty);
        ``close``: the helper's descriptors the child closes first (the error
        pipe's read end, the control socket)."""
        spec = self.spec
        caps = capability.cap_numbers(frozenset(spec.capabilities), last_cap=self.last_cap)
        program = spec.seccomp or b""
        if spec.seccomp is not None and not spec.seccomp:
            raise OSError(errno.EINVAL, "seccomp filter of 0 bytes is not a BPF program")
        return _jobstart.start_job(
            root=os.fsencode(self.root.path),
            argv=[os.fsencode(a) for a in spec.argv],
            envp=self.envp,
            candidates=[os.fsencode(c) for c in self.candidates],
            slash="/" in self.name,
            cwd=os.fsencode(spec.cwd),
            procs=self.proc_args,
            cgroup_fds=self.cgroup_fds,
            close_fds=close,
            stdin_fd=-1 if stdin is None else stdin,
            errw=errw,
            uid=spec.uid,
            gid=spec.gid,
            caps=sum(1 << c for c in caps),
            last_cap=self.last_cap,
            seccomp=program,
        )

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.pop())

    def failure_error(self, record: bytes) -> BaseException:
        """The error for a failure record the child wrote on the error pipe."""
        step = int.from_bytes(record[0:4], sys.byteorder, signed=True)
        err = int.from_bytes(record[4:8], sys.byteorder, signed=True)
        index = int.from_bytes(record[8:12], sys.byteorder, signed=True)
        reason = os.strerror(err)
        if step == STEP_PROC_OPEN and index >= 0:
            dest = self.procs[index].dest
            return AssemblyError(
                f"proc -> {dest}: {dest} is a symlink or not a directory in the container"
                f" ({reason})"
            )
        if step in (STEP_MASK, STEP_READONLY):
            op = self.hardening[index >> 16][index & 0xFFFF]
            return AssemblyError(f"{op.describe()}: {OSError(err, reason)}")
        if step == STEP_CWD:
            return JobInvalid(f"cwd {self.spec.cwd}: {reason}")
        if step == STEP_NOT_EXECUTABLE:
            return JobInvalid(f"exec {self.name}: not executable")
        if step == STEP_NO_FILE:
            return JobInvalid(f"exec {self.name}: no such file in the container")
        if step == STEP_NOT_IN_PATH:
            return JobInvalid(f"exec {self.name}: not found in PATH={self.search}")
        if step == STEP_EXEC:
            path = self.candidates[index]
            if err in _EXEC_INVALID:
                return JobInvalid(f"exec {path}: {reason}")
            if err == errno.E2BIG:
                return JobInvalid(
                    f"exec {path}: argument list too long: exec and env take more than the"
                    " kernel allows with this stack rlimit (a quarter of `ulimit -s`)"
                )
        call = STEPS[step - 1] if 0 < step <= len(STEPS) else f"step {step}"
        return OSError(err, f"{call}: {reason}")
