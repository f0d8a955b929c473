"""The resource limits a job starts with: documented defaults, not its invoker's.

Resource limits survive ``fork`` and ``execve``, so without this a job got
whatever the shell that ran ``repeatr run`` had (``ulimit -n 512``, ``ulimit
-c unlimited``, ``ulimit -s 1024``, a CI runner's or a service's limits):
a job that works for one user fails for another, and its outputs can differ
(a core file appears, a build hits its fd limit). Every executor starts the
job with :data:`JOB_RLIMITS`: what the kernel gives its first process
(``include/asm-generic/resource.h``: ``INIT_RLIMITS``) except
``RLIMIT_NOFILE``, which is what podman and systemd give (1024 soft, so
``select(2)`` stays safe, a high hard limit the job may raise its soft one
to), and ``RLIMIT_NPROC``/``RLIMIT_SIGPENDING`` (the kernel scales them with
memory): the host's hard limit.

A limit is never raised above the host's hard limit (raising one needs
CAP_SYS_RESOURCE, which a host may not give root: spec/host-notes.md) nor
``RLIMIT_NOFILE`` above ``fs.nr_open``: :func:`job_rlimits` caps them, so a
host with lower hard limits gives its jobs those.
"""

from __future__ import annotations

import resource

INF = resource.RLIM_INFINITY
_MIB = 1 << 20

#: name -> (soft, hard); INF for unlimited (capped to the host's hard limit).
JOB_RLIMITS: dict[str, tuple[int, int]] = {
    "RLIMIT_CPU": (INF, INF),
    "RLIMIT_FSIZE": (INF, INF),
    "RLIMIT_DATA": (INF, INF),
    "RLIMIT_STACK": (8 * _MIB, INF),  # _STK_LIM
    "RLIMIT_CORE": (0, INF),  # no core files unless the job asks for them
    "RLIMIT_RSS": (INF, INF),
    "RLIMIT_NPROC": (INF, INF),  # the host's hard limit
    "RLIMIT_NOFILE": (1024, 1 << 20),  # podman's, systemd's hard limit; the kernel's soft one
    "RLIMIT_MEMLOCK": (8 * _MIB, 8 * _MIB),  # MLOCK_LIMIT
    "RLIMIT_AS": (INF, INF),
    "RLIMIT_LOCKS": (INF, INF),
    "RLIMIT_SIGPENDING": (INF, INF),  # the host's hard limit
    "RLIMIT_MSGQUEUE": (819200, 819200),  # MQ_BYTES_MAX
    "RLIMIT_NICE": (0, 0),
    "RLIMIT_RTPRIO": (0, 0),
    "RLIMIT_RTTIME": (INF, INF),
}

#: Linux's numbers (``include/uapi/asm-generic/resource.h``): Python's
#: ``resource`` has no RLIMIT_LOCKS.
_NUMBER = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


def _min(a: int, b: int) -> int:
    if a == INF:
        return b
    if b == INF:
        return a
    return min(a, b)


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def job_rlimits() -> list[tuple[str, int, int]]:
    """(name, soft, hard) for each of :data:`JOB_RLIMITS`, capped to what this
    process may set (its hard limits; ``fs.nr_open`` for ``RLIMIT_NOFILE``)."""
    out = []
    for name, (soft, hard) in JOB_RLIMITS.items():
        _cur_soft, cur_hard = resource.getrlimit(_NUMBER[name])
        if name == "RLIMIT_NOFILE":
            cur_hard = _min(cur_hard, _nr_open())
        hard = _min(hard, cur_hard)
        out.append((name, _min(soft, hard), hard))
    return out


def apply_job_rlimits() -> None:
    """Set :func:`job_rlimits` on this process (a sandbox helper, before it starts
    the job or a runtime: both inherit them). OSError if one cannot be set."""
    for name, soft, hard in job_rlimits():
        resource.setrlimit(_NUMBER[name], (soft, hard))
