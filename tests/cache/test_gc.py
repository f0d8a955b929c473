"""gc: least recently used first, down to a size, never a shelf in use."""

from __future__ import annotations

from pathlib import Path

from repeatr.cache import Cache
from tests.cache.conftest import Ware, Workers, make_ware, tree, wait_for


def _three_wares(tmp_path: Path) -> list[Ware]:
    return [
        make_ware(tmp_path / "wares" / f"{name}.tgz", {"data": name.encode() * size})
        for name, size in (("a", 1000), ("b", 2000), ("c", 4000))
    ]


def _use(cache: Cache, ware: Ware) -> None:
    with cache.shelf(ware.id, [ware.url]):
        pass


def test_gc_removes_least_recently_used_down_to_max_size(tmp_path: Path, root: Path) -> None:
    a, b, c = _three_wares(tmp_path)
    cache = Cache(root)
    for ware in (a, b, c, a):  # a used again: b is now the oldest, then c
        _use(cache, ware)
    assert [info.ware for info in cache.ls()] == [b.id, c.id, a.id]
    assert [info.size for info in cache.ls()] == [2000, 4000, 1000]

    result = cache.gc(5000)  # 7000 in all: removing b (2000) is enough
    assert [info.ware for info in result.removed] == [b.id]
    assert result.total == 5000 and result.freed == 2000 and result.kept_in_use == []
    assert [info.ware for info in cache.ls()] == [c.id, a.id]
    assert not cache.layout.record(b.id).exists()
    assert not cache.layout.lock(b.id).exists()

    result = cache.gc(1000)
    assert [info.ware for info in result.removed] == [c.id]
    assert [info.ware for info in cache.ls()] == [a.id]

    result = cache.gc(0)
    assert [info.ware for info in result.removed] == [a.id]
    assert cache.ls() == []
    assert tree(root / "tmp") == []
    assert tree(root / "cache" / "tar" / "fileset" / a.id.hash[:3] / a.id.hash[3:6]) == []

    # A removed shelf comes back on the next use.
    with cache.shelf(b.id, [b.url]) as handle:
        assert handle.unpacked


def test_gc_never_removes_a_shelf_held_by_another_process(
    tmp_path: Path, root: Path, workers: Workers
) -> None:
    a, b, _ = _three_wares(tmp_path)
    cache = Cache(root)
    _use(cache, a)
    _use(cache, b)
    hold = tmp_path / "hold"
    hold.mkdir()
    holder = workers.start(
        cmd="shelf", root=str(root), ware=str(a.id), urls=[a.url], hold=str(hold)
    )
    wait_for((hold / "held").exists, what="the worker to hold the shelf")
    assert {info.ware: info.in_use for info in cache.ls()} == {a.id: True, b.id: False}

    result = cache.gc(0)
    assert [info.ware for info in result.removed] == [b.id]
    assert [info.ware for info in result.kept_in_use] == [a.id]
    assert result.total == 1000
    assert (cache.layout.shelf(a.id) / "data").read_bytes() == b"a" * 1000

    (hold / "release").touch()
    assert Workers.result(holder)["ok"]
    result = cache.gc(0)
    assert [info.ware for info in result.removed] == [a.id]
    assert cache.ls() == []
