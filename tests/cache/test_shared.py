"""SharedCache: in one process, a shelf is taken once, whoever else needs it meanwhile."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from repeatr import locks
from repeatr.cache.info import ShelfHandle
from repeatr.cache.shared import SharedCache
from repeatr.model.wareid import WareID
from tests.cache.conftest import make_ware


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _until(predicate: Callable[[], object], what: str) -> None:
    with anyio.move_on_after(20):
        # Polling: the lists are filled from worker threads (on_wait), not by events.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting until {what}")


class _OtherProcess:
    """Holds a ware's per-ware lock as another process would, until ``release``."""

    def __init__(self, cache: SharedCache, ware: WareID) -> None:
        cache.layout.ensure_ware_dirs(ware)
        self._held: contextlib.ExitStack | None = contextlib.ExitStack()
        self._held.enter_context(
            locks.exclusive(cache.layout.lock(ware), resource="test", timeout=None)
        )

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


@pytest.mark.anyio
async def test_users_of_one_ware_wait_on_its_lock_once(tmp_path: Path, root: Path) -> None:
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"})
    waits: list[str] = []
    handles: list[ShelfHandle] = []
    async with SharedCache(root, on_wait=waits.append) as cache:
        # Another process holds the per-ware lock: every user here would wait on it.
        other = _OtherProcess(cache, ware.id)
        try:

            async def use() -> None:
                async with cache.open_shelf(ware.id, [ware.url]) as handle:
                    handles.append(handle)

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(use)
                await _until(lambda: waits, "the first user waits on the lock")
                await anyio.sleep(0.2)  # the others had time to queue on the lock too
                other.release()
        finally:
            other.release()
        assert cache.holds == 1
        assert [info.in_use for info in cache.ls()] == [True]  # held until the cache closes
    assert len(waits) == 1
    assert len(handles) == 5 and sum(h.unpacked for h in handles) == 1
    assert {h.path for h in handles} == {handles[0].path}


@pytest.mark.anyio
async def test_a_cancelled_taker_leaves_the_shelf_to_the_next(tmp_path: Path, root: Path) -> None:
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"})
    waits: list[str] = []
    got: list[ShelfHandle] = []
    async with SharedCache(root, on_wait=waits.append) as cache:
        other = _OtherProcess(cache, ware.id)
        try:
            first_scope = anyio.CancelScope()

            async def first() -> None:
                with first_scope:
                    async with cache.open_shelf(ware.id, [ware.url]):
                        raise AssertionError("the first user was cancelled while waiting")

            async def second() -> None:
                async with cache.open_shelf(ware.id, [ware.url]) as handle:
                    got.append(handle)

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                await _until(lambda: len(waits) == 1, "the first user waits on the lock")
                tg.start_soon(second)
                await anyio.sleep(0.1)  # the second waits for the first, in memory
                assert len(waits) == 1
                first_scope.cancel()
                await _until(lambda: len(waits) == 2, "the second waits on the lock itself")
                other.release()
        finally:
            other.release()
        assert cache.holds == 1
    assert len(got) == 1 and got[0].unpacked
    assert [info.in_use for info in cache.ls()] == [False]  # released when the cache closed
