"""Removing a tree someone else shaped: a job's work dir or outputs, a ware's content.

Such a tree is hostile. It may be nested deeper than Python's recursion
limit or the open-file limit (``shutil.rmtree`` recurses: a ware nested
3,000 levels made it raise RecursionError), hold symlinks to anywhere, dirs
a non-root user may not list or write (a ware's mode 0500 and 0000 dirs), or
a stale mount (a bug elsewhere), and it may change while it is removed.
:func:`remove_tree` is the one remover for all of them (the run's work dir,
the cache's shelves and temp dirs, an unpack's or an import's temp dir, the
OCI runtime's state):

- iterative, holding one directory open at a time: going back up opens
  ``..`` and checks it is the directory it came from (else stops: the tree
  was moved, and what ``..`` is now is not ours to remove);
- fd-relative and ``O_NOFOLLOW``: a symlink is unlinked, never followed, and
  a directory swapped for a symlink meanwhile is unlinked as one;
- never into another filesystem: a directory whose ``st_dev`` differs from the
  top's is a mount point (a btrfs subvolume looks the same) and is reported,
  neither emptied nor removed (emptying a stale mount deletes what it shows).
  A bind mount from the top's own filesystem has its ``st_dev`` and is not
  told apart: repeatr mounts in private namespaces only, so these trees
  should hold no mount at all; this check is for a stale one left by a bug;
- a directory it may not open, list or change (``EACCES``/``EPERM``, as
  non-root) is made ``u+rwx``, fd-relative and never through a symlink, and
  the call is tried once more.

Every failure but a vanished entry is reported (``"<path>: <reason>"``): the
caller decides whether to retry (``repeatr.workdir.remove``), raise or leave
it for gc. Import-light (``os``, ``stat``, ``errno``): a single run removes its work dir
with it and must not import ``shutil`` (~3 ms: bz2, lzma).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Opens a directory without read or search permission on it (to chmod it).
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RWX = 0o700


def remove_tree(path: str | os.PathLike[str], *, missing_ok: bool = True) -> list[str]:
    """Remove the tree at ``path``; what could not be removed (``"<path>: <reason>"``), else [].

    ``path`` itself is not followed either: a symlink there is reported and
    left, a file (a single-file ware's shelf) is unlinked. A missing ``path``
    is fine unless ``missing_ok`` is false (then it is reported).
    """
    top = os.fspath(path)
    failures: list[str] = []
    try:
        fd = _open_dir(top, None)
    except FileNotFoundError as exc:
        if not missing_ok:
            failures.append(f"{top}: {exc.strerror}")
        return failures
    except OSError as exc:
        _remove_top_entry(top, exc, failures)
        return failures
    _empty(fd, top, failures)
    try:
        os.rmdir(top)
    except FileNotFoundError:
        pass
    except OSError as exc:
        failures.append(f"{top}: {exc.strerror}")
    return failures


def _remove_top_entry(top: str, exc: OSError, failures: list[str]) -> None:
    """``top`` could not be opened as a directory: unlink it if it is a file, else report."""
    try:
        mode = os.lstat(top).st_mode
    except FileNotFoundError:
        return
    except OSError:
        mode = 0
    if stat.S_ISLNK(mode):
        failures.append(f"{top}: a symlink: not followed, not removed")
    elif mode and not stat.S_ISDIR(mode):
        _attempt(lambda: os.unlink(top), None, top, failures)
    else:
        failures.append(f"{top}: {exc.strerror}")


def _empty(fd: int, top: str, failures: list[str]) -> None:
    """Remove everything in the directory open as ``fd`` (``top``), one directory open
    at a time; closes ``fd`` (or the one it holds when it stops)."""
    held, where = fd, top
    try:
        device = _identity(held)[0]
        pending = _clear(held, where, failures)
        #: For each directory above the open one: its identity, its subdirectories left.
        above: list[tuple[tuple[int, int], list[str]]] = []
        while True:
            if pending:
                name = pending.pop()
                try:
                    sub = _open_dir(name, held)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    # Swapped for a symlink or a file since it was listed: unlinked as one.
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        _attempt(_unlink(name, held), held, where, failures, name)
                    else:
                        failures.append(f"{where}/{name}: {exc.strerror}")
                    continue
                if _identity(sub)[0] != device:
                    os.close(sub)
                    failures.append(
                        f"{where}/{name}: a mount point (another filesystem): "
                        "not emptied, not removed"
                    )
                    continue
                above.append((_identity(held), pending))
                os.close(held)
                held, where = sub, f"{where}/{name}"
                pending = _clear(held, where, failures)
                continue
            if not above:
                return
            parent = _open_dir("..", held)
            os.close(held)
            held = parent
            identity, pending = above.pop()
            where, _, name = where.rpartition("/")
            if _identity(held) != identity:
                failures.append(f"{where}: moved while its tree was removed")
                return
            _attempt(_rmdir(name, held), held, where, failures, name)
    except OSError as exc:
        failures.append(f"{where}: {exc.strerror}")
    finally:
        os.close(held)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _clear(dir_fd: int, where: str, failures: list[str]) -> list[str]:
    """Unlink all but the directories in the directory open as ``dir_fd`` (``where``:
    its path); their names."""
    try:
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as exc:
        failures.append(f"{where}: {exc.strerror}")
        return []
    for name, is_dir in entries:
        if not is_dir:
            _attempt(_unlink(name, dir_fd), dir_fd, where, failures, name)
    return [name for name, is_dir in entries if is_dir]


def _unlink(name: str, dir_fd: int) -> Callable[[], None]:
    return lambda: os.unlink(name, dir_fd=dir_fd)


def _rmdir(name: str, dir_fd: int) -> Callable[[], None]:
    return lambda: os.rmdir(name, dir_fd=dir_fd)


def _attempt(
    call: Callable[[], None], dir_fd: int | None, where: str, failures: list[str], name: str = ""
) -> None:
    """``call`` (an unlink or rmdir in ``dir_fd``, which is ``where``), again once after
    making ``dir_fd`` ``u+rwx`` if permission was denied; a failure is appended."""
    what = f"{where}/{name}" if name else where
    try:
        try:
            call()
        except PermissionError:
            if dir_fd is None or not _let_me_in(dir_fd):
                raise
            call()
    except FileNotFoundError:
        pass
    except OSError as exc:
        failures.append(f"{what}: {exc.strerror}")


def _open_dir(name: str, dir_fd: int | None) -> int:
    """Open directory ``name`` (in ``dir_fd``), never through a symlink; when permission
    is denied, make it and ``dir_fd`` ``u+rwx`` and try once more."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        fixed = dir_fd is not None and _let_me_in(dir_fd)
        try:
            sub = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
        except OSError:
            sub = -1
        if sub >= 0:
            try:
                fixed = _let_me_in(sub) or fixed
            finally:
                os.close(sub)
        if not fixed:
            raise
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _let_me_in(fd: int) -> bool:
    """Add ``u+rwx`` to the directory open as ``fd`` (``O_PATH`` or not); whether it
    changed. ``fchmod`` refuses an ``O_PATH`` fd: ``/proc/self/fd/<fd>`` names the
    directory itself (the link is to it, not a path to resolve again)."""
    try:
        mode = os.fstat(fd).st_mode & 0o7777
        if mode & _RWX == _RWX:
            return False
        try:
            os.chmod(fd, mode | _RWX)
        except OSError:
            os.chmod(f"/proc/self/fd/{fd}", mode | _RWX)
    except OSError:
        return False
    return True
