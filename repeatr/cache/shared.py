"""One process, many runs: each shelf is taken once and held until the process is done.

The per-ware lock (:mod:`repeatr.cache.fill`) already makes exactly one of
many processes unpack a ware; the others wait on it, then find the shelf.
Within one process (a batch of formulas sharing inputs) even that wait is
wasted: :class:`SharedCache` keeps a map of the shelves it holds (or is
taking), so the first run that needs a ware takes it, the others wait on
that in memory and share the handle. Shelves stay held in use until the
cache is closed (``async with``): a ware needed again later in the batch is
not looked up again, and ``cache gc`` leaves it alone meanwhile.

If the run taking a shelf fails or is cancelled (its fetch URLs may be the
wrong ones for the others), the next run waiting for it tries with its own.

A run's output that later runs read (a graph's) is put onto its shelf by
``keep_output`` in the worker thread that packed it, and held the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec

from repeatr.cache import DEFAULT_LOCK_TIMEOUT, DEFAULT_ROOT, Cache
from repeatr.cache.info import ShelfHandle
from repeatr.model.wareid import WareID

if TYPE_CHECKING:
    from repeatr.fileset.limits import Limits
    from repeatr.model.filters import Filters

#: How long releasing every shelf at the end may take (locks only: it is quick).
RELEASE_TIMEOUT = 30.0


@dataclass
class _Taking:
    """A shelf being taken (``handle`` None) or held, and who waits for it."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    handle: ShelfHandle | None = None
    manager: AbstractContextManager[ShelfHandle] | None = None


class SharedCache(Cache):
    """A :class:`Cache` whose shelves are taken once per process (see the module docstring).

    Use it as an async context manager; closing it releases every shelf.
    ``holds`` counts the shelves actually taken (a ware needed by ten runs: 1).
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
        super().__init__(
            root, lock_timeout=lock_timeout, on_wait=on_wait, limits=limits, ware_disk=ware_disk
        )
        self._shelves: dict[WareID, _Taking] = {}
        #: Shelves kept by worker threads (``keep_output``), not in the map yet.
        self._kept: list[tuple[WareID, AbstractContextManager[ShelfHandle], ShelfHandle]] = []
        #: Shelves kept while a run took the same ware: released at the close.
        self._extra: list[AbstractContextManager[ShelfHandle]] = []
        self._open = False
        self.holds = 0

    async def __aenter__(self) -> SharedCache:
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        self._take_kept()
        held, self._shelves = self._shelves, {}
        managers = [t.manager for t in held.values() if t.manager is not None] + self._extra
        self._extra = []
        with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_TIMEOUT):
            for manager in managers:
                await anyio.to_thread.run_sync(manager.__exit__, None, None, None)

    @asynccontextmanager
    async def open_shelf(
        self,
        ware: WareID,
        sources: Sequence[str],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncIterator[ShelfHandle]:
        """The shelf of ``ware``: taken by the first caller, shared with the others.

        ``unpacked`` is True only for the caller whose call unpacked it.
        """
        if not self._open:
            raise RuntimeError("SharedCache.open_shelf outside `async with`")
        self._take_kept()
        while True:
            taking = self._shelves.get(ware)
            if taking is None:
                handle = await self._take(ware, sources, progress)
                break
            await taking.ready.wait()
            if taking.handle is not None:
                handle = msgspec.structs.replace(taking.handle, unpacked=False)
                break
            # Whoever was taking it failed or was cancelled: try ourselves.
        yield handle

    def keep_output(
        self,
        ware: WareID,
        tree: Path,
        filters: Filters,
        *,
        checkpoint: Callable[[], None] | None = None,
    ) -> ShelfHandle:
        """:meth:`Cache.keep_output`, and the shelf held until the cache is closed: a
        later run of this process that reads the output takes it from memory.

        Called in a worker thread (no hop back to the event loop): the shelf is
        handed over through a list that the loop's next :meth:`open_shelf`
        (or the close) takes into its map.
        """
        if not self._open:
            return super().keep_output(ware, tree, filters, checkpoint=checkpoint)
        manager = self.shelve_tree(ware, tree, filters, checkpoint=checkpoint)
        handle = manager.__enter__()
        self._kept.append((ware, manager, handle))  # list.append: atomic under the GIL
        return handle

    def _take_kept(self) -> None:
        """Shelves kept by worker threads since the last call: into the map (in the loop)."""
        while self._kept:
            ware, manager, handle = self._kept.pop(0)
            if ware in self._shelves:  # taken meanwhile by a run: held twice until the close
                self._extra.append(manager)
                continue
            taking = self._shelves[ware] = _Taking(handle=handle, manager=manager)
            taking.ready.set()
            self.holds += 1

    async def _take(
        self, ware: WareID, sources: Sequence[str], progress: Callable[[int], None] | None
    ) -> ShelfHandle:
        taking = self._shelves[ware] = _Taking()
        try:
            manager = self.shelf(
                ware, sources, progress=progress, checkpoint=anyio.from_thread.check_cancelled
            )
            handle = await anyio.to_thread.run_sync(manager.__enter__)
        except BaseException:
            del self._shelves[ware]
            taking.ready.set()  # handle None: each waiter tries itself
            raise
        taking.manager, taking.handle = manager, handle
        self.holds += 1
        taking.ready.set()
        return handle
