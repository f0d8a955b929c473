"""The job's start in C (``_jobstart.c``): clone(CLONE_VM | CLONE_VFORK), set up, execve.

Called only by ``repeatr.executors.jobstart``, which prepares the arguments
and turns a failure read from ``errw`` into an error.
"""

#: Bytes of one failure record on the error pipe: step, errno, index (int32 each).
FAILURE_SIZE: int

def start_job(
    root: bytes,
    argv: list[bytes],
    envp: list[bytes],
    candidates: list[bytes],
    slash: bool,
    cwd: bytes,
    procs: list[tuple[bytes, bytes | None, list[tuple[bytes, bool]]]],
    cgroup_fds: list[int],
    close_fds: list[int],
    stdin_fd: int,
    errw: int,
    uid: int,
    gid: int,
    caps: int,
    last_cap: int,
    seccomp: bytes,
) -> int:
    """Start the job; its pid once it has exec'd or failed (a failure is on ``errw``)."""
