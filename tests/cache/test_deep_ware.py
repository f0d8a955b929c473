"""A hostile ware nested 3,000 levels (deeper than Python's recursion limit) in the
cache: every path that removes it (a failed unpack's cleanup, gc, the discard of a dead
owner's temp) removes all of it. ``shutil.rmtree`` recursed: RecursionError, and the
tree stayed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.cache import Cache
from repeatr.cache.layout import Layout
from repeatr.errors import Category, RepeatrError
from repeatr.linux.rmtree import remove_tree
from repeatr.owner import Owner
from tests.cache.conftest import Ware
from tests.fileset import hostile as h
from tests.fileset.trees import nest

DEPTH = 3000
LIMITS = h.deep_limits(DEPTH)


@pytest.fixture
def deep(tmp_path: Path, root: Path) -> Iterator[Ware]:
    """The ware, served from a file; the cache root is removed after the test, whatever
    it left (pytest's own cleanup of old base temp dirs recurses)."""
    path = tmp_path / "wares" / "deep.tgz"
    path.parent.mkdir()
    path.write_bytes(h.build(h.nested(DEPTH)))
    from repeatr.fileset.pack import scan_stream

    with path.open("rb") as f:
        ware = scan_stream(f, limits=LIMITS)
    try:
        yield Ware(ware, path)
    finally:
        assert remove_tree(root) == []


def test_gc_removes_a_shelf_nested_3000_levels(deep: Ware, root: Path) -> None:
    cache = Cache(root, limits=LIMITS)
    with cache.shelf(deep.id, [deep.url]) as handle:
        assert handle.unpacked
    result = cache.gc(0)
    assert [info.ware for info in result.removed] == [deep.id]
    assert cache.ls() == []
    assert os.listdir(root / "tmp") == []
    assert not cache.layout.shelf(deep.id).exists()


def test_a_failed_unpack_into_the_cache_leaves_nothing(
    deep: Ware, root: Path, tmp_path: Path
) -> None:
    """Another ware's bytes under this ID (as deep, one more file): HASH_MISMATCH after
    3,000 levels were made; the unpack's cleanup removes them, and the error is the
    mismatch."""
    other = tmp_path / "wares" / "other.tgz"
    other.write_bytes(h.build([*h.nested(DEPTH), h.file("more", b"1")]))
    cache = Cache(root, limits=LIMITS)
    with pytest.raises(RepeatrError) as info, cache.shelf(deep.id, [f"file://{other}"]):
        pass
    assert info.value.category is Category.HASH_MISMATCH
    assert os.listdir(root / "tmp") == []
    assert not cache.layout.shelf(deep.id).exists()


def test_clean_stale_discards_a_dead_owners_temp_nested_3000_levels(
    deep: Ware, root: Path
) -> None:
    """A run killed mid-unpack left its temp dir: the next user discards it."""
    layout = Layout(root)
    layout.ensure_dirs()
    me = Owner.current()
    gone = Owner(pid=me.pid, start=me.start + 1, boot=me.boot, host=me.host)  # a reused pid
    stale = layout.temp_name("unpack", deep.id, gone)
    nest(stale, DEPTH)
    assert Cache(root).clean_stale() == [stale.name]
    assert os.listdir(root / "tmp") == []
