"""A tree just packed, put onto its ware's shelf without a fetch (``Cache.shelve_tree``).

What a graph does with a step's output that the next steps read: the shelf
must be exactly what an unpack of the saved ware makes, or nothing at all.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import pytest

from repeatr.cache import Cache
from repeatr.cache.shared import SharedCache
from repeatr.errors import Category, FilesetError
from repeatr.fileset.pack import hash_dir_exact, pack_dir
from repeatr.fileset.unpack import unpack_stream
from repeatr.model.filters import PACK_FLATTEN, UNPACK_LOSSLESS, Filters
from repeatr.model.wareid import WareID
from tests.cache.conftest import tree


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _output(path: Path) -> Path:
    """A job's output as it might look: files, a dir, a symlink, odd modes and times."""
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "log").write_bytes(b"0\n1\n")
    (path / "sub" / "big").write_bytes(os.urandom(3 << 20))  # more than one block
    (path / "sub" / "deeper" / "empty").write_bytes(b"")
    (path / "sub" / "exe").write_bytes(b"#!/bin/sh\n")
    os.chmod(path / "sub" / "exe", 0o4755)
    os.symlink("../log", path / "sub" / "link")
    os.utime(path / "log", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.chmod(path / "sub" / "deeper", 0o555)  # read-only: the unpack must still fill it
    return path


def _packed(tree_path: Path, saved: Path, filters: Filters) -> WareID:
    with open(saved, "wb") as out:
        return pack_dir(tree_path, out, filters=filters)


def _unpacked(saved: Path, ware: WareID, dest: Path) -> WareID:
    """The strict ID of what an unpack of the saved ware makes (as the cache unpacks)."""
    with open(saved, "rb") as stream:
        return unpack_stream(stream, dest, expected=ware, filters=UNPACK_LOSSLESS).strict_id


@pytest.mark.parametrize("filters", [PACK_FLATTEN, Filters()], ids=["flatten", "keep"])
def test_the_shelf_is_what_an_unpack_of_the_ware_makes(
    tmp_path: Path, root: Path, filters: Filters
) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", filters)
    cache = Cache(root)
    with cache.shelve_tree(ware, out, filters) as handle:
        assert handle.unpacked and handle.ware == ware
        shelf_id = hash_dir_exact(handle.path)
    fresh = _unpacked(tmp_path / "ware.tgz", ware, tmp_path / "fresh")
    # Byte for byte and attribute for attribute (ns mtimes, modes, owners, links).
    assert shelf_id == fresh == hash_dir_exact(tmp_path / "fresh")
    assert handle.record.strict == str(fresh) and handle.record.strict_exact
    # `repeatr cache verify` and `ls` see an ordinary shelf.
    assert cache.verify() == []
    assert [info.ware for info in cache.ls()] == [ware]
    # Taken again, as a run's input: found, not unpacked again.
    with cache.shelf(ware, []) as again:
        assert not again.unpacked and again.path == handle.path


def test_a_single_file_output(tmp_path: Path, root: Path) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"one file\n")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    with Cache(root).shelve_tree(ware, out, PACK_FLATTEN) as handle:
        assert handle.path.is_file() and handle.path.read_bytes() == b"one file\n"
        assert hash_dir_exact(handle.path) == _unpacked(tmp_path / "ware.tgz", ware, tmp_path / "f")


def test_a_tree_changed_since_its_pack_leaves_nothing(tmp_path: Path, root: Path) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    (out / "sub" / "big").write_bytes(b"changed after the pack")
    cache = Cache(root)
    with pytest.raises(FilesetError) as info, cache.shelve_tree(ware, out, PACK_FLATTEN):
        pass
    assert info.value.category is Category.HASH_MISMATCH
    _assert_nothing_of(cache, ware)
    assert cache.ls() == []


def test_a_cancelled_shelving_leaves_nothing(tmp_path: Path, root: Path) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    cache = Cache(root)
    calls = 0

    class Cancelled(Exception):
        pass

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # past the lock, inside the unpack
            raise Cancelled

    with pytest.raises(Cancelled), cache.shelve_tree(ware, out, PACK_FLATTEN, checkpoint=checkpoint):
        pass
    assert calls == 4
    _assert_nothing_of(cache, ware)
    # And the next one makes it whole.
    with cache.shelve_tree(ware, out, PACK_FLATTEN) as handle:
        assert handle.unpacked and hash_dir_exact(handle.path) == _unpacked(
            tmp_path / "ware.tgz", ware, tmp_path / "fresh"
        )


def test_racing_shelvers_make_one_shelf(tmp_path: Path, root: Path) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    made: list[bool] = []
    start = threading.Barrier(4)

    def shelve() -> None:
        start.wait()
        with Cache(root).shelve_tree(ware, out, PACK_FLATTEN) as handle:
            made.append(handle.unpacked)

    threads = [threading.Thread(target=shelve) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(made) == [False, False, False, True]
    assert Cache(root).verify() == []


@pytest.mark.anyio
async def test_a_shared_cache_holds_a_kept_output_for_its_later_runs(
    tmp_path: Path, root: Path
) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    async with SharedCache(root) as shared:
        # As a run keeps it: in the worker thread that packed it.
        kept = await anyio.to_thread.run_sync(shared.keep_output, ware, out, PACK_FLATTEN)
        assert kept.unpacked
        # A run reading it: taken from memory (no source to fetch from is needed).
        async with shared.open_shelf(ware, []) as handle:
            assert not handle.unpacked and handle.path == kept.path
        assert shared.holds == 1
        # Held in use meanwhile: gc leaves it.
        assert shared.gc(0).kept_in_use
    assert shared.gc(0).kept_in_use == []


@pytest.mark.anyio
async def test_a_kept_output_also_taken_by_a_run_is_released_at_the_close(
    tmp_path: Path, root: Path
) -> None:
    out = _output(tmp_path / "out")
    ware = _packed(out, tmp_path / "ware.tgz", PACK_FLATTEN)
    Cache(root).keep_output(ware, out, PACK_FLATTEN)  # made by another process
    async with SharedCache(root) as shared:
        async with shared.open_shelf(ware, []) as taken:
            assert not taken.unpacked
        kept = await anyio.to_thread.run_sync(shared.keep_output, ware, out, PACK_FLATTEN)
        assert not kept.unpacked and kept.path == taken.path
        async with shared.open_shelf(ware, []) as again:
            assert again.path == taken.path
        assert shared.holds == 1
    assert shared.gc(0).kept_in_use == []  # both holds released: gc removed it
    assert Cache(root).ls() == []


def _assert_nothing_of(cache: Cache, ware: WareID) -> None:
    assert not os.path.lexists(cache.layout.shelf(ware))
    assert not cache.layout.record(ware).exists()
    assert tree(cache.layout.tmp) == []
