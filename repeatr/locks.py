"""flock-based locks between processes: one lock file per resource.

repeatr has no daemon; concurrent invocations (``make -j``, shell loops)
coordinate through these. Two kinds, both on ``flock(2)``:

- **exclusive** (``LOCK_EX``): one holder. While holding it, the holder
  writes its :class:`~repeatr.owner.Owner` into the lock file, so a waiter
  can say who probably holds it; the record is cleared on release.
- **shared** (``LOCK_SH``): many holders, no record. Used as an "in use"
  mark: whoever wants to delete the resource tries an exclusive lock on the
  same file without waiting, and fails while anyone holds it shared.

Why flock: the kernel drops it when the holder dies (even by SIGKILL), so a
lock is never stale; only a record can be, and a record naming a dead
owner is reported as such and simply overwritten by the next holder.

Why ``fcntl.flock`` directly and not the ``filelock`` package: filelock has
no shared mode, which the in-use marks need; its Unix lock falls back to
marker files where flock is unsupported, which a SIGKILL leaves behind, the
exact staleness we rely on flock to avoid; and it does not let the holder
keep a record in the lock file. One small mechanism serves both kinds.

Waiting polls a non-blocking ``flock`` with short sleeps (10 ms growing to
200 ms): no CPU burn, no thread stuck in a blocking call that cannot be
cancelled, and a timeout that is exact enough. Calls block, so async code
runs them in a worker thread (``anyio.to_thread.run_sync``).

Lock files may be unlinked by a holder of the exclusive lock (a cache
removing a shelf's bookkeeping). Every acquisition therefore checks, after
locking, that the path still names the locked inode, and retries otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from repeatr.errors import CacheError, Category
from repeatr.owner import Owner

#: Longest sleep between two attempts while waiting.
MAX_POLL = 0.2
_FIRST_POLL = 0.01
_RECORD_MAX = 4096


class LockTimeout(CacheError):
    """A lock could not be taken in time. ``holder`` is who probably holds it.

    The category defaults to CACHE; callers locking something else pass
    their own.
    """

    def __init__(
        self,
        message: str,
        *,
        resource: str,
        holder: Owner | None,
        category: Category | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, category=category, hint=hint)
        self.resource = resource
        self.holder = holder


class Lock:
    """A held lock. Release it (or leave its context) exactly once."""

    def __init__(self, path: Path, fd: int, *, shared: bool) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def write_record(self, owner: Owner) -> None:
        """Name the holder in the lock file (exclusive locks only)."""
        assert self._fd is not None and not self.shared
        data = f"{owner}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def unlink(self) -> None:
        """Remove the lock file while holding it exclusively.

        Safe because every acquirer re-checks the path after locking: a
        waiter that locked this (now nameless) inode retries on a new file.
        """
        assert self._fd is not None and not self.shared
        os.unlink(self.path)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.shared:
                os.ftruncate(fd, 0)  # no record once nobody holds it
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_record(path: Path) -> Owner | None:
    """The owner named in a lock file, if any (it may be stale: check ``is_alive``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        return _record_from_fd(fd)
    finally:
        os.close(fd)


def _record_from_fd(fd: int) -> Owner | None:
    text = os.pread(fd, _RECORD_MAX, 0).decode(errors="replace")
    first = text.splitlines()[0] if text.strip() else ""
    return Owner.try_parse(first) if first else None


def _open(path: Path, *, create: bool) -> int | None:
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None


def _still_linked(fd: int, path: Path) -> bool:
    """Does ``path`` still name the inode open as ``fd``?"""
    try:
        on_disk = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _attempt(path: Path, *, shared: bool, create: bool) -> tuple[Lock | None, Owner | None, bool]:
    """One non-blocking attempt: (lock, probable holder, file exists)."""
    while True:
        fd = _open(path, create=create)
        if fd is None:
            return None, None, False
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _record_from_fd(fd)
            os.close(fd)
            return None, holder, True
        except BaseException:
            os.close(fd)
            raise
        if _still_linked(fd, path):
            return Lock(path, fd, shared=shared), None, True
        os.close(fd)  # we locked an unlinked file: its holder removed it; go again
        if not create:
            return None, None, False


def try_lock(path: Path, *, shared: bool = False, create: bool = True) -> Lock | None:
    """Take the lock if it is free right now, else None. No record is written.

    With ``create=False`` a missing lock file also gives None (probing
    without leaving files behind).
    """
    lock, _, _ = _attempt(path, shared=shared, create=create)
    return lock


def _describe_holder(holder: Owner | None) -> str:
    if holder is None:
        return "held by another process"
    if not holder.is_alive():
        return f"held by another process (its record names {holder.describe()}: stale)"
    return f"held by {holder.describe()}"


def acquire(
    path: Path,
    *,
    resource: str,
    timeout: float | None,
    shared: bool = False,
    on_wait: Callable[[str], None] | None = None,
    category: Category | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Lock:
    """Take the lock on ``path``, waiting up to ``timeout`` seconds (None: forever).

    ``checkpoint`` is called between attempts; it raises to stop waiting
    (a cancelled run passes ``anyio.from_thread.check_cancelled``).

    The lock file is created (0600) if missing; its directory must exist.
    An exclusive lock records the caller as its holder. ``on_wait`` is
    called once, with a message naming the probable holder, when the lock
    is not free at the first attempt (for a "waiting for ..." line).
    Raises :class:`LockTimeout` naming ``resource`` and the probable holder.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = _FIRST_POLL
    told = False
    while True:
        lock, holder, _ = _attempt(path, shared=shared, create=True)
        if lock is not None:
            if not shared:
                try:
                    lock.write_record(Owner.current())
                except BaseException:
                    lock.release()
                    raise
            return lock
        if not told and on_wait is not None:
            on_wait(f"waiting for the lock on {resource}, {_describe_holder(holder)}")
            told = True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            kind = "shared lock" if shared else "lock"
            raise LockTimeout(
                f"timed out after {timeout:g}s waiting for the {kind} on {resource}, "
                f"{_describe_holder(holder)}",
                resource=resource,
                holder=holder,
                category=category,
                hint=f"lock file {path}",
            )
        if checkpoint is not None:
            checkpoint()
        sleep = delay if deadline is None else min(delay, max(deadline - now, 0.0))
        time.sleep(sleep)
        delay = min(delay * 2, MAX_POLL)


@contextmanager
def exclusive(
    path: Path,
    *,
    resource: str,
    timeout: float | None,
    on_wait: Callable[[str], None] | None = None,
    category: Category | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[Lock]:
    """Hold the exclusive lock on ``path`` for the block (see :func:`acquire`)."""
    with acquire(
        path,
        resource=resource,
        timeout=timeout,
        on_wait=on_wait,
        category=category,
        checkpoint=checkpoint,
    ) as lock:
        yield lock


@contextmanager
def shared(
    path: Path,
    *,
    resource: str,
    timeout: float | None,
    on_wait: Callable[[str], None] | None = None,
    category: Category | None = None,
) -> Iterator[Lock]:
    """Hold a shared lock on ``path`` for the block (see :func:`acquire`)."""
    with acquire(
        path, resource=resource, timeout=timeout, shared=True, on_wait=on_wait, category=category
    ) as lock:
        yield lock


def is_locked(path: Path) -> bool:
    """Does anyone hold ``path`` (shared or exclusive) right now? Missing file: no.

    A probe, racy by nature: for display, never for deciding to delete.
    """
    lock = try_lock(path, create=False)
    if lock is None:
        return path.exists()
    lock.release()  # nobody held it, so clearing its record loses nothing
    return False
