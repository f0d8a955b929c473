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
from repeatr.linux.rmtree import remove_tree
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

    The job shaped the tree: :func:`repeatr.linux.rmtree.remove_tree` removes it
    (iterative, fd-relative, never following a symlink nor entering a mount).
    Overlay work dirs contain mode-000 dirs: root removes them. A pass that
    leaves something (a process still writing, a mount still held) is retried
    after 50 ms, ``attempts`` passes in all; what is left then is for the
    caller to report (``repeatr gc`` removes it once its owner is dead).
    """
    failures: list[str] = []
    for attempt in range(attempts):
        failures = remove_tree(path)
        if not os.path.lexists(path):
            return []
        if attempt + 1 < attempts:
            time.sleep(0.05)
    return failures or [f"{path}: still there after {attempts} attempts"]


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
