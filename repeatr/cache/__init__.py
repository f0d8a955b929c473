"""The fileset cache: each ware unpacked once per host into a read-only shelf.

A *shelf* is a ware unpacked (losslessly, hash verified) into the cache
directory, shared by every run on the host. Processes coordinate only
through flock-guarded files (no daemon): a per-ware exclusive lock makes
exactly one of many concurrent callers unpack a ware, and a shared in-use
lock keeps gc away from shelves being used. Layout on disk:
:mod:`repeatr.cache.layout` (compatible with the original rio's shelves);
protocol: :mod:`repeatr.cache.fill`, :mod:`repeatr.cache.maintain`; for
users: docs/caching.md.

Everything here blocks (disk, network, waiting for locks): async callers use
:meth:`Cache.open_shelf`, or run the rest in ``anyio.to_thread.run_sync``.

The cache directory is created 0700: only root can reach a shelf. Shelves
must be mounted read-only (overlay lower dir, ro bind); :class:`ShelfHandle`
documents this, and nothing hands out a path meant for writing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from repeatr.cache import fill
from repeatr.cache.info import ShelfHandle
from repeatr.cache.layout import Layout
from repeatr.model.wareid import WareID

if TYPE_CHECKING:
    from repeatr.cache.report import GcResult, Problem, ShelfInfo
    from repeatr.fileset.limits import Limits
    from repeatr.model.filters import Filters

__all__ = ["DEFAULT_ROOT", "Cache", "GcResult", "Problem", "ShelfHandle", "ShelfInfo"]

#: Default cache directory. The CLI overrides it with --cache or REPEATR_CACHE.
DEFAULT_ROOT = Path("/var/lib/repeatr")

#: How long to wait for another process's hold on a ware (it may be unpacking
#: a large ware over a slow link; the wait only guards against a hang).
DEFAULT_LOCK_TIMEOUT = 3600.0


class Cache:
    """The cache rooted at ``root``.

    ``on_wait`` receives a message (naming the probable holder) when a lock
    is not free at once: the CLI shows it as "waiting for ...".
    """

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        on_wait: Callable[[str], None] | None = None,
        limits: Limits | None = None,
        ware_disk: str | None = None,
    ) -> None:
        self.layout = Layout(Path(root).absolute())
        self.lock_timeout = lock_timeout
        self.on_wait = on_wait
        self.limits = limits
        #: What one ware may write (``50%`` of the free space, ``20G``, ``none``);
        #: None: ``repeatr.fileset.limits.DEFAULT_WARE_DISK``. Measured at each unpack.
        self.ware_disk = ware_disk

    @property
    def root(self) -> Path:
        return self.layout.root

    def shelf(
        self,
        ware: WareID,
        sources: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> AbstractContextManager[ShelfHandle]:
        """Hold ``ware``'s shelf in use for the block, unpacking it first if needed.

        Exactly one of many concurrent callers (threads or processes)
        unpacks; ``ShelfHandle.unpacked`` says whether it was this one.
        Fetches from ``sources`` (warehouse URLs, tried in order). Errors
        keep their category: ware not found (5), hash mismatch (7), ...;
        a lock wait beyond ``lock_timeout`` is a CacheError naming the
        holder. A failed unpack leaves neither shelf nor temp dir.
        ``checkpoint`` is called while waiting for the lock and while
        unpacking; whatever it raises stops both (cancellation).
        """
        return fill.shelf(
            self.layout,
            ware,
            sources,
            timeout=self.lock_timeout,
            on_wait=self.on_wait,
            limits=self.limits,
            ware_disk=self.ware_disk,
            progress=progress,
            checkpoint=checkpoint,
        )

    @asynccontextmanager
    async def open_shelf(
        self,
        ware: WareID,
        sources: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncIterator[ShelfHandle]:
        """:meth:`shelf` for async callers: the blocking parts run in a worker thread.

        A cancelled caller stops waiting for the lock or unpacking within a
        block of data (the worker thread checks for cancellation), leaving
        nothing behind. Releasing runs shielded, so a cancelled run still
        drops its in-use mark.
        """
        import anyio
        import anyio.from_thread
        import anyio.to_thread

        manager = self.shelf(
            ware, sources, progress=progress, checkpoint=anyio.from_thread.check_cancelled
        )
        handle = await anyio.to_thread.run_sync(manager.__enter__)
        try:
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(manager.__exit__, None, None, None)

    def shelve_tree(
        self,
        ware: WareID,
        tree: Path,
        filters: Filters,
        *,
        checkpoint: Callable[[], None] | None = None,
    ) -> AbstractContextManager[ShelfHandle]:
        """:meth:`shelf`, made from ``tree`` (just packed as ``ware`` with ``filters``)
        instead of fetched: a run's output, for the runs that read it next.

        Under the same per-ware lock, leaving the same record, as an unpack
        of the ware (it *is* one, of the tree's entries: the hash is verified,
        so a tree changed since its pack is refused, HASH_MISMATCH, and
        leaves nothing). A shelf already there is held as it is.
        """
        return fill.shelve_tree(
            self.layout,
            ware,
            tree,
            filters,
            timeout=self.lock_timeout,
            on_wait=self.on_wait,
            limits=self.limits,
            ware_disk=self.ware_disk,
            checkpoint=checkpoint,
        )

    def keep_output(
        self,
        ware: WareID,
        tree: Path,
        filters: Filters,
        *,
        checkpoint: Callable[[], None] | None = None,
    ) -> ShelfHandle:
        """:meth:`shelve_tree` in one call, blocking (a worker thread's: the one that
        packed ``tree``): the shelf made, or found. Not held here; a
        :class:`~repeatr.cache.shared.SharedCache` holds it for its later runs.

        ``checkpoint`` as for :meth:`shelf`: what it raises stops the unpack
        and leaves no shelf.
        """
        with self.shelve_tree(ware, tree, filters, checkpoint=checkpoint) as handle:
            return handle

    # ls, gc and verify import repeatr.cache.maintain (and the report types) only
    # when called: a run never needs them.

    def ls(self) -> list[ShelfInfo]:
        """Every shelf (ours and rio's), least recently used first."""
        from repeatr.cache import maintain

        return maintain.ls(self.layout)

    def gc(self, max_size: int) -> GcResult:
        """Remove least recently used shelves until at most ``max_size`` bytes remain.

        Shelves in use are never removed: they are listed in ``kept_in_use``.
        """
        from repeatr.cache import maintain

        self.clean_stale()
        return maintain.gc(self.layout, max_size)

    def verify(self) -> list[Problem]:
        """Re-hash every shelf against its recorded strict ID; the mismatches."""
        from repeatr.cache import maintain

        return maintain.verify(self.layout, timeout=self.lock_timeout, on_wait=self.on_wait)

    def clean_stale(self) -> list[str]:
        """Remove temp dirs left by dead processes; their names."""
        return fill.clean_stale(self.layout)


def __getattr__(name: str) -> object:
    """``ShelfInfo``, ``GcResult``, ``Problem``: from :mod:`repeatr.cache.report`, on first use."""
    if name in ("GcResult", "Problem", "ShelfInfo"):
        from repeatr.cache import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
