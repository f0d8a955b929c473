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

import errno
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, NamedTuple

from repeatr import locks
from repeatr.cache import record
from repeatr.cache.info import ShelfHandle
from repeatr.cache.layout import Layout, TempName, discard, remove_tree
from repeatr.cache.record import ShelfRecord
from repeatr.errors import CacheError, FilesetError
from repeatr.model.wareid import WareID
from repeatr.owner import Owner

if TYPE_CHECKING:
    from repeatr.fileset.limits import Limits


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
    me = Owner.current()
    for leftover in layout.temps_of("unpack", ware):
        discard(layout, leftover, ware, me)
    work = layout.temp_name("unpack", ware, me)
    try:
        work.mkdir(mode=0o700)
        staged = work / "fileset"
        # Imported here: a warm run (the shelf exists) needs neither the archive
        # reader nor the warehouses.
        from repeatr.model.filters import UNPACK_LOSSLESS
        from repeatr.warehouse.fetch import unpack_ware

        try:
            result = unpack_ware(
                ware,
                sources,
                staged,
                filters=UNPACK_LOSSLESS,
                limits=limits,
                progress=progress,
                checkpoint=checkpoint,
            )
        except FilesetError as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
                # The cache's disk is full: a cache problem, not the ware's or the user's path.
                raise CacheError(
                    f"no space left in the cache {layout.root} to unpack {ware}: {exc}",
                    hint="free space with `repeatr cache gc --max-size SIZE`, or give a cache"
                    " (--cache, REPEATR_CACHE) on a larger filesystem",
                ) from exc
            raise
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
        remove_tree(work)


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
    and a shelf without a record is not adopted (that would bless whatever
    is on disk now).
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
            found = record.read(layout.record(ware))
            if found is None and fill is not None:
                found = record.adopt(shelf, ware)
                record.write(layout.record(ware), found)
        elif fill is not None:
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
    progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[ShelfHandle]:
    """See :meth:`repeatr.cache.Cache.shelf`."""
    layout.ensure_dirs()
    clean_stale(layout)

    def fill() -> ShelfRecord:
        from repeatr.fileset.limits import Limits  # only an unpack needs it

        return _unpack(layout, ware, sources, limits or Limits(), progress, checkpoint)

    with hold(
        layout, ware, timeout=timeout, on_wait=on_wait, fill=fill, checkpoint=checkpoint
    ) as held:
        assert held is not None and held.record is not None
        yield ShelfHandle(layout.shelf(ware), ware, held.unpacked, held.record)
