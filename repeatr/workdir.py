"""Run work dirs: one per run, named by its owner so a dead run's dir can be reaped.

A work dir holds what a run writes on the host: the overlay upper and work
dirs of its inputs. Mounts are not in it from the host's point of view: they
live in the run's private mount namespace and vanish with it. The dir is
named ``<guid>.<owner>`` (``repeatr.owner``), so any later invocation can tell,
without a daemon, that its run is dead (killed by SIGKILL, a crash, a reboot)
and remove it: :func:`reap_stale`, called at the start of every run and by
``repeatr gc``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from repeatr.errors import Category, DiskFull, RepeatrError, is_no_space
from repeatr.owner import Owner


def runs_dir(state_root: Path) -> Path:
    return state_root / "runs"


def create(state_root: Path, guid: str) -> Path:
    """A fresh, empty work dir for run ``guid``, owned by this process."""
    parent = runs_dir(state_root)
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = parent / f"{guid}.{Owner.current()}"
        path.mkdir(mode=0o700)
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull.of(exc, parent, "create a work dir under") from exc
        raise RepeatrError(
            f"cannot create a work dir under {parent}: {exc.strerror}",
            category=Category.RUN_CACHE,
            hint="check that the state directory (--cache) is writable and not full",
        ) from exc
    return path


def remove(path: Path, *, attempts: int = 3) -> list[str]:
    """Remove a work dir; what could not be removed (``"<path>: <reason>"``), else [].

    Overlay work dirs contain mode-000 dirs: root removes them. A pass that
    leaves something (a process still writing, a mount still held) is retried
    after 50 ms, ``attempts`` passes in all; what is left then is for the
    caller to report (``repeatr gc`` removes it once its owner is dead).
    """
    failures: list[str] = []
    for attempt in range(attempts):
        failures.clear()
        _remove_tree(os.fspath(path), failures)
        if not os.path.lexists(path):
            return []
        if attempt + 1 < attempts:
            time.sleep(0.05)
    return failures or [f"{path}: still there after {attempts} attempts"]


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_tree(path: str, failures: list[str]) -> None:
    """``shutil.rmtree`` without importing ``shutil`` (~3 ms of a run: it imports bz2,
    lzma, zlib), fd-relative as it is, so a symlink in the tree (planted by the
    job) is removed, never followed. Every failure but a vanished entry is appended.

    Iterative, holding one directory open at a time: a job's tree may be
    nested deeper than Python's recursion limit or the open-file limit
    (``shutil.rmtree`` recurses, and raised RecursionError on 3,000 levels).
    Going back up opens ``..`` and checks it is the directory it came from.
    """
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError as exc:
        failures.append(f"{path}: {exc}")
        return
    where = path
    try:
        pending = _clear(fd, where, failures)
        #: For each directory above the open one: its identity, its subdirectories left.
        above: list[tuple[tuple[int, int], list[str]]] = []
        while True:
            if pending:
                name = pending.pop()
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    failures.append(f"{where}/{name}: {exc}")
                    continue
                above.append((_identity(fd), pending))
                os.close(fd)
                fd, where = sub, f"{where}/{name}"
                pending = _clear(fd, where, failures)
                continue
            if not above:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            identity, pending = above.pop()
            where, _, name = where.rpartition("/")
            if _identity(fd) != identity:
                failures.append(f"{where}: moved while its tree was removed")
                return
            _unlink(fd, name, where, failures, rmdir=True)
    except OSError as exc:
        failures.append(f"{where}: {exc}")
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        failures.append(f"{path}: {exc}")


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _clear(dir_fd: int, where: str, failures: list[str]) -> list[str]:
    """Remove all but the directories in the directory open as ``dir_fd`` (``where``:
    its path); their names."""
    try:
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as exc:
        failures.append(f"{where}: {exc}")
        return []
    for name, is_dir in entries:
        if not is_dir:
            _unlink(dir_fd, name, where, failures, rmdir=False)
    return [name for name, is_dir in entries if is_dir]


def _unlink(dir_fd: int, name: str, where: str, failures: list[str], *, rmdir: bool) -> None:
    try:
        if rmdir:
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        failures.append(f"{where}/{name}: {exc}")


def owner_of(path: Path) -> Owner | None:
    _, sep, owner = path.name.partition(".")
    if not sep:
        return None
    try:
        return Owner.parse(owner)
    except RepeatrError:
        return None


def reap_stale(state_root: Path) -> list[Path]:
    """Remove the work dirs of runs whose owner is dead; the ones removed."""
    parent = runs_dir(state_root)
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return []
    reaped = []
    for entry in entries:
        path = Path(entry.path)
        owner = owner_of(path)
        if owner is not None and not owner.is_alive():
            remove(path)
            reaped.append(path)
    return reaped
