"""open_shelf: the same protocol for async callers, on every anyio backend."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from repeatr.cache import Cache
from tests.cache.conftest import make_ware


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_open_shelf_holds_in_use_until_exit(tmp_path: Path, root: Path) -> None:
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"})
    cache = Cache(root)
    async with cache.open_shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked and (handle.path / "a").read_bytes() == b"1"
        assert [info.in_use for info in cache.ls()] == [True]
    assert [info.in_use for info in cache.ls()] == [False]


@pytest.mark.anyio
async def test_cancelled_user_drops_its_in_use_mark(tmp_path: Path, root: Path) -> None:
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"})
    cache = Cache(root)
    with anyio.move_on_after(0.2):
        async with cache.open_shelf(ware.id, [ware.url]):
            await anyio.sleep(10)
    assert [info.in_use for info in cache.ls()] == [False]
    assert cache.gc(0).removed[0].ware == ware.id
