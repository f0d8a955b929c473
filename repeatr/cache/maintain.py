"""Looking after the cache: list shelves, collect old ones, verify them.

gc removes least recently used shelves first and never one in use: for
each candidate it takes the per-ware lock and then the in-use lock
*exclusively without waiting*. Users hold the in-use lock shared for as
long as they use the shelf (and take it while holding the per-ware lock,
see :mod:`repeatr.cache.fill`), so the exclusive attempt fails exactly when
someone uses the shelf or is about to; gc then skips it and says so.
Removal renames the shelf into ``tmp/`` first, so it disappears atomically,
drops its bookkeeping, releases the locks, and only then deletes the tree.

Shelves made by the original rio are listed and collected too (their size
is measured from disk). rio itself takes none of our locks: do not run
``gc`` while rio uses the same cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from repeatr import locks
from repeatr.cache import record
from repeatr.cache.fill import hold
from repeatr.cache.layout import Layout
from repeatr.cache.report import GcResult, Problem, ShelfInfo
from repeatr.errors import RepeatrError
from repeatr.linux.rmtree import remove_tree
from repeatr.model.wareid import WareID
from repeatr.owner import Owner


def ls(layout: Layout) -> list[ShelfInfo]:
    """Every shelf, least recently used first."""
    infos = []
    for ware, shelf in layout.iter_shelves():
        found = record.read(layout.record(ware), ware)
        size, entries = (found.size, found.entries) if found else record.measure(shelf)
        infos.append(
            ShelfInfo(
                ware=ware,
                path=shelf,
                size=size,
                entries=entries,
                last_used=record.last_used(layout.used(ware), shelf),
                in_use=locks.is_locked(layout.inuse(ware)),
                strict=found.strict if found else None,
            )
        )
    infos.sort(key=lambda info: (info.last_used, str(info.ware)))
    return infos


def _remove(layout: Layout, ware: WareID) -> bool:
    """Remove one shelf unless anyone holds or is filling it. True if removed."""
    layout.ensure_ware_dirs(ware)
    lock = locks.try_lock(layout.lock(ware))
    if lock is None:
        return False  # being unpacked, or a user is between lock and in-use
    me = Owner.current()
    with lock:
        lock.write_record(me)
        in_use = locks.try_lock(layout.inuse(ware))
        if in_use is None:
            return False
        with in_use:
            grave = layout.temp_name("gc", ware, me)
            try:
                os.rename(layout.shelf(ware), grave)
            except FileNotFoundError:
                return False  # already gone
            for path in (layout.record(ware), layout.used(ware)):
                path.unlink(missing_ok=True)
            in_use.unlink()
            lock.unlink()
    remove_tree(grave)  # best effort: a grave left over is clean_stale's once we are gone
    return True


def gc(layout: Layout, max_size: int) -> GcResult:
    """Remove LRU shelves until the total size is at most ``max_size``.

    Sizes are content bytes. ``max_size`` 0 removes every shelf not in use.
    """
    shelves = ls(layout)
    total = sum(info.size for info in shelves)
    result = GcResult()
    for info in shelves:
        # Shelves of empty files count 0 bytes: only 0 removes them all.
        if total <= max_size and max_size > 0:
            break
        if _remove(layout, info.ware):
            result.removed.append(info)
            total -= info.size
        else:
            result.kept_in_use.append(info)
    return GcResult(result.removed, result.kept_in_use, total)


def verify(
    layout: Layout,
    *,
    timeout: float | None,
    on_wait: Callable[[str], None] | None = None,
) -> list[Problem]:
    """Re-hash every shelf and compare with its recorded strict ID (or, without one, its ware ID).

    The re-hash is exact (nanosecond mtimes, xattrs: ``hash_dir_exact``), as
    the unpack recorded it; records from older versions are re-hashed the
    way they were made (``pack_dir``).

    Each shelf is held in use while it is hashed, so gc cannot remove it
    half way; users may keep using it meanwhile (they only read).
    """
    problems = []
    for ware, shelf in list(layout.iter_shelves()):
        with hold(layout, ware, timeout=timeout, on_wait=on_wait, fill=None) as held:
            if held is None:
                continue  # removed since we listed it
            if held.record is None:
                # No valid record (made by rio, or the record lost): the ware
                # ID is all there is to check against. A run would do the
                # same, then keep or discard it.
                try:
                    actual = str(record.ware_id_on_disk(shelf, ware))
                except (RepeatrError, OSError) as exc:
                    problems.append(Problem(ware, shelf, f"cannot be hashed: {exc}"))
                    continue
                if actual != str(ware):
                    problems.append(
                        Problem(
                            ware,
                            shelf,
                            "no valid record, and the contents do not match the ware ID"
                            " (the next run that needs it unpacks it afresh)",
                            expected=str(ware),
                            actual=actual,
                        )
                    )
                continue
            try:
                actual = str(record.strict_id(shelf, exact=held.record.strict_exact))
            except (RepeatrError, OSError) as exc:
                problems.append(Problem(ware, shelf, f"cannot be hashed: {exc}"))
                continue
            if actual != held.record.strict:
                problems.append(
                    Problem(
                        ware,
                        shelf,
                        "contents changed since unpacked",
                        expected=held.record.strict,
                        actual=actual,
                    )
                )
    return problems
