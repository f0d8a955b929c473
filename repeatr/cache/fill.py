"""Getting a shelf: unpack a ware once per host, then hold it in use.

The protocol, per ware (files as in :mod:`repeatr.cache.layout`):

1. Take the per-ware exclusive lock (``.lock``). Every process that wants
   the ware queues here, so exactly one unpacks it; the others find the
   shelf in place when their turn comes.
2. If the shelf is missing: delete any ``unpack`` temp dirs of this ware
   (we hold the lock, so whoever made them is gone), unpack into a fresh
   temp dir named by our :class:`~repeatr.owner.Owner`, verifying the hash
   against the ware ID, write the record, then rename the fileset into
   place. The rename is the commit: a shelf is either complete or absent.
   A failed or killed unpack leaves no shelf; a killed one leaves a temp dir
   that the next user (or ``clean_stale``) removes.
3. Take the shared in-use lock (``.inuse``) *before* releasing the per-ware
   lock. gc takes the per-ware lock and then the in-use lock exclusively
   without waiting, so it can never slip in between and remove a shelf that
   is about to be used.
4. Release the per-ware lock; yield; drop the in-use lock at the end.

Errors from the warehouse or the unpack keep their own category (ware not
found 5, hash mismatch 7, ...); cache problems are CacheError (9).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from repeatr import locks
from repeatr.cache import record
from repeatr.cache.info import ShelfHandle
from repeatr.cache.layout import Layout, TempName, discard
from repeatr.cache.record import ShelfRecord
from repeatr.errors import CacheError, DiskFull, is_no_space
from repeatr.linux.rmtree import remove_tree
from repeatr.model.wareid import WareID
from repeatr.owner import Owner

if TYPE_CHECKING:
    from repeatr.fileset.limits import Limits
    from repeatr.fileset.unpack import UnpackResult
    from repeatr.model.filters import Filters


def clean_stale(layout: Layout) -> list[str]:
    """Remove temp dirs whose owner is dead; return their names."""
    me = Owner.current()
    removed = []
    for path in layout.list_temps():
        name = TempName.parse(path.name)
        if name is None or name.owner.is_alive():
            continue
        if discard(layout, path, name.ware, me):
            removed.append(path.name)
    return removed


def _unpack(
    layout: Layout,
    ware: WareID,
    sources: Sequence[str],
    limits: Limits,
    progress: Callable[[int], None] | None,
    checkpoint: Callable[[], None] | None = None,
) -> ShelfRecord:
    """Unpack ``ware`` onto its shelf. Caller holds the per-ware lock."""

    def unpack(staged: Path) -> UnpackResult:
        # Imported here: a warm run (the shelf exists) needs neither the archive
        # reader nor the warehouses.
        from repeatr.model.filters import UNPACK_LOSSLESS
        from repeatr.warehouse.fetch import unpack_ware

        return unpack_ware(
            ware,
            sources,
            staged,
            filters=UNPACK_LOSSLESS,
            limits=limits,
            progress=progress,
            checkpoint=checkpoint,
        )

    return _fill(layout, ware, unpack)


def _unpack_tree(
    layout: Layout,
    ware: WareID,
    tree: Path,
    filters: Filters,
    limits: Limits,
    checkpoint: Callable[[], None] | None = None,
) -> ShelfRecord:
    """Put ``tree`` (just packed as ``ware`` with ``filters``) onto ``ware``'s shelf.

    Unpacked from the tree's entries as the pack saw them (no archive, no
    warehouse), through the same unpack that verifies the hash: the shelf is
    what an unpack of the ware makes, or nothing (HASH_MISMATCH if the tree
    changed since). Caller holds the per-ware lock.
    """

    def unpack(staged: Path) -> UnpackResult:
        from repeatr.fileset.pack import tree_members
        from repeatr.fileset.unpack import unpack_members
        from repeatr.model.filters import UNPACK_LOSSLESS

        return unpack_members(
            tree_members(tree, filters=filters, limits=limits),
            staged,
            expected=ware,
            filters=UNPACK_LOSSLESS,
            limits=limits,
            checkpoint=checkpoint,
        )

    return _fill(layout, ware, unpack)


def _fill(layout: Layout, ware: WareID, unpack: Callable[[Path], UnpackResult]) -> ShelfRecord:
    """Make ``ware``'s shelf with ``unpack`` (into a path that does not exist yet),
    recorded, then renamed into place. Caller holds the per-ware lock."""
    me = Owner.current()
    for leftover in layout.temps_of("unpack", ware):
        discard(layout, leftover, ware, me)
    work = layout.temp_name("unpack", ware, me)
    try:
        work.mkdir(mode=0o700)
        staged = work / "fileset"
        try:
            result = unpack(staged)
        except DiskFull as exc:
            # Name the cache and the ware, and say how to make room there.
            if exc.__cause__ is None:  # the ware's disk limit, not the disk
                raise DiskFull(
                    f"cannot unpack {ware} into the cache {layout.root}: {exc.message}",
                    hint=exc.hint,
                ) from exc
            raise DiskFull(
                f"disk full: no space left in the cache {layout.root} to unpack {ware}:"
                f" {exc.message}",
                hint="free space with `repeatr cache gc --max-size SIZE`, or give a cache"
                " (--cache, REPEATR_CACHE) on a larger filesystem",
            ) from exc
        # The unpack hashed the tree as it wrote it: its strict ID is what
        # verify's exact re-hash of the shelf gives, so no second read.
        made = ShelfRecord(
            ware=str(ware),
            strict=str(result.strict_id),
            strict_exact=True,
            size=result.bytes,
            entries=result.entries,
            created=time.time(),
        )
        # Record first, then commit: a crash in between leaves a record
        # without a shelf, which the next unpack simply overwrites.
        record.write(layout.record(ware), made)
        try:
            os.rename(staged, layout.shelf(ware))
        except OSError as exc:
            raise CacheError(
                f"cannot move the unpacked {ware} onto its shelf {layout.shelf(ware)}: "
                f"{exc.strerror}"
            ) from exc
        return made
    finally:
        remove_tree(work)  # best effort: a temp left over is clean_stale's once we are gone


def _discard_shelf(layout: Layout, ware: WareID) -> None:
    """Remove a shelf that is not its ware. Caller holds the per-ware lock.

    Only if no one uses it: a run that holds it in use has it mounted.
    """
    in_use = locks.try_lock(layout.inuse(ware))
    if in_use is None:
        raise CacheError(
            f"the shelf of {ware} ({layout.shelf(ware)}) has no valid record and does not"
            " match its ware ID, and a run is using it",
            hint="let the runs using it finish, then run again: it is unpacked afresh",
        )
    with in_use:
        layout.record(ware).unlink(missing_ok=True)
        discard(layout, layout.shelf(ware), ware, Owner.current())


class Holding(NamedTuple):
    #: None only for a shelf without a record when no ``fill`` was given.
    record: ShelfRecord | None
    unpacked: bool


@contextmanager
def hold(
    layout: Layout,
    ware: WareID,
    *,
    timeout: float | None,
    on_wait: Callable[[str], None] | None,
    fill: Callable[[], ShelfRecord] | None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[Holding | None]:
    """Hold ``ware``'s shelf in use; with ``fill``, unpack it first if missing.

    Without ``fill`` (verify) a missing shelf yields None, holding nothing,
    and a shelf without a valid record is left as it is. With ``fill``, such
    a shelf is re-hashed against its ware ID: kept and recorded if it
    matches, else discarded and unpacked afresh (never adopted as it is).
    """
    layout.ensure_ware_dirs(ware)
    shelf = layout.shelf(ware)
    resource = f"cached ware {ware}"
    in_use: locks.Lock | None = None
    with locks.exclusive(
        layout.lock(ware),
        resource=resource,
        timeout=timeout,
        on_wait=on_wait,
        checkpoint=checkpoint,
    ):
        unpacked = False
        found: ShelfRecord | None = None
        # A directory, or a regular file for a single-file ware.
        present = (os.path.isdir(shelf) or os.path.isfile(shelf)) and not os.path.islink(shelf)
        if present:
            found = record.read(layout.record(ware), ware)
            if found is None and fill is not None:
                found = record.adopt(shelf, ware)
                if found is not None:
                    record.write(layout.record(ware), found)
                else:  # not the ware: never used as it is; unpacked afresh
                    _discard_shelf(layout, ware)
                    present = False
        if not present and fill is not None:
            found = fill()
            unpacked = present = True
        if present:
            in_use = locks.acquire(
                layout.inuse(ware), resource=resource, timeout=timeout, shared=True
            )
    if in_use is None:
        yield None
        return
    with in_use:
        with suppress(OSError):  # only the LRU order's hint: a full disk must not fail a run
            record.touch(layout.used(ware))
        try:
            yield Holding(found, unpacked)
        finally:
            with suppress(OSError):
                record.touch(layout.used(ware))


@contextmanager
def shelf(
    layout: Layout,
    ware: WareID,
    sources: Sequence[str],
    *,
    timeout: float | None,
    on_wait: Callable[[str], None] | None = None,
    limits: Limits | None = None,
    ware_disk: str | None = None,
    progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[ShelfHandle]:
    """See :meth:`repeatr.cache.Cache.shelf`."""

    def fill() -> ShelfRecord:
        bounded = _bounded(layout, limits, ware_disk)
        return _unpack(layout, ware, sources, bounded, progress, checkpoint)

    with _held(layout, ware, fill, timeout=timeout, on_wait=on_wait, checkpoint=checkpoint) as h:
        yield h


@contextmanager
def shelve_tree(
    layout: Layout,
    ware: WareID,
    tree: Path,
    filters: Filters,
    *,
    timeout: float | None,
    on_wait: Callable[[str], None] | None = None,
    limits: Limits | None = None,
    ware_disk: str | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[ShelfHandle]:
    """See :meth:`repeatr.cache.Cache.shelve_tree`."""

    def fill() -> ShelfRecord:
        bounded = _bounded(layout, limits, ware_disk)
        return _unpack_tree(layout, ware, tree, filters, bounded, checkpoint)

    with _held(layout, ware, fill, timeout=timeout, on_wait=on_wait, checkpoint=checkpoint) as h:
        yield h


def _bounded(layout: Layout, limits: Limits | None, ware_disk: str | None) -> Limits:
    """The limits of an unpack into the cache, the disk limit measured now, on the
    filesystem the unpack writes to."""
    # Only an unpack needs these.
    from repeatr.fileset.limits import DEFAULT_WARE_DISK, Limits

    return (limits or Limits()).with_disk(ware_disk or DEFAULT_WARE_DISK, layout.tmp)


@contextmanager
def _held(
    layout: Layout,
    ware: WareID,
    fill: Callable[[], ShelfRecord],
    *,
    timeout: float | None,
    on_wait: Callable[[str], None] | None,
    checkpoint: Callable[[], None] | None,
) -> Iterator[ShelfHandle]:
    """:func:`hold` with ``fill``, as a handle; a full disk in the bookkeeping said so."""
    entered = False
    try:
        layout.ensure_dirs()
        clean_stale(layout)
        with hold(
            layout, ware, timeout=timeout, on_wait=on_wait, fill=fill, checkpoint=checkpoint
        ) as held:
            assert held is not None and held.record is not None
            entered = True
            yield ShelfHandle(layout.shelf(ware), ware, held.unpacked, held.record)
    except OSError as exc:
        # The bookkeeping (dirs, lock files, records) on a full disk: say so.
        if entered or not is_no_space(exc):
            raise
        raise DiskFull.of(exc, layout.root, "prepare the cache in") from exc
