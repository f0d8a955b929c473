"""A process's root directory, held by a descriptor rather than named by a pid.

Packing reads a job's outputs through its sandbox helper's root
(``/proc/<pid>/root``). A pid is only a number: were the helper to die
(killed, out of memory) and be reaped while the outputs are packed, the
number could be given to another process, another run's helper in a batch
say, and ``/proc/<pid>/root`` would then lead into *its* root: its job's
files packed as ours. :func:`hold_root` opens the root once (``O_PATH``),
then checks the pidfd: a process still running after the open is the one
the pid named, so the descriptor is its root, whatever becomes of the pid.
Paths under ``/proc/self/fd/<fd>`` then resolve through that descriptor.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from contextlib import contextmanager


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def hold_root(pid: int, pidfd: int) -> int:
    """An ``O_PATH`` descriptor of the root of the process ``pidfd`` refers to (pid ``pid``).

    ``ProcessLookupError`` if that process has exited (its pid may name another now).
    """
    if _exited(pidfd):
        raise ProcessLookupError(f"process {pid} has exited: its root is gone")
    try:
        fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ProcessLookupError(f"process {pid} has exited: its root is gone") from exc
    if _exited(pidfd):  # it may have exited, and the pid been reused, before the open
        os.close(fd)
        raise ProcessLookupError(f"process {pid} has exited: its root is gone")
    return fd


def fd_path(fd: int) -> str:
    """A path that resolves through ``fd`` (in this process only)."""
    return f"/proc/self/fd/{fd}"


@contextmanager
def view_of(pid: int, pidfd: int, path: str) -> Iterator[str]:
    """``path`` (absolute) in the root of the process ``pidfd`` refers to, held for the
    ``with`` block (:func:`hold_root`'s ``ProcessLookupError`` if it has exited)."""
    fd = hold_root(pid, pidfd)
    try:
        yield os.path.join(fd_path(fd), path.lstrip("/"))
    finally:
        os.close(fd)
