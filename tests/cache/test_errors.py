"""Failures: they keep their category and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.cache import Cache
from repeatr.errors import Category, RepeatrError
from repeatr.locks import LockTimeout
from tests.cache.conftest import (
    SANS_BASE,
    WITH_BASE,
    Workers,
    fixture_ware,
    make_ware,
    tree,
    wait_for,
)


def test_hash_mismatch_leaves_no_shelf_and_no_temp(tmp_path: Path, root: Path) -> None:
    # The file holds tar_withBase; we ask for tar_sansBase's ID.
    served = fixture_ware(tmp_path, "tar_withBase.tgz", WITH_BASE)
    cache = Cache(root)
    with pytest.raises(RepeatrError) as caught, cache.shelf(SANS_BASE, [served.url]):
        pass
    assert caught.value.category is Category.HASH_MISMATCH
    assert not cache.layout.shelf(SANS_BASE).exists()
    assert not cache.layout.record(SANS_BASE).exists()
    assert tree(root / "tmp") == []
    assert tree(root / "cache") == [
        "tar",
        "tar/fileset",
        f"tar/fileset/{SANS_BASE.hash[:3]}",
        f"tar/fileset/{SANS_BASE.hash[:3]}/{SANS_BASE.hash[3:6]}",
    ]
    assert cache.ls() == []


def test_ware_not_found_keeps_its_category(tmp_path: Path, root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with (
        pytest.raises(RepeatrError) as caught,
        Cache(root).shelf(WITH_BASE, [f"file://{tmp_path}/empty/nothing.tgz"]),
    ):
        pass
    assert caught.value.category is Category.WARE_NOT_FOUND
    assert tree(root / "tmp") == []


def test_the_original_fixture_shelves(tmp_path: Path, root: Path) -> None:
    served = fixture_ware(tmp_path, "tar_withBase.tgz", WITH_BASE)
    with Cache(root).shelf(WITH_BASE, [served.url]) as handle:
        assert handle.unpacked
        assert sorted(p.name for p in handle.path.iterdir()) == ["ab", "bc"]


def test_lock_timeout_names_the_holder(tmp_path: Path, root: Path, workers: Workers) -> None:
    ware = make_ware(tmp_path / "w.tgz", {"a": b"1"})
    cache = Cache(root, lock_timeout=0.3)
    cache.layout.ensure_ware_dirs(ware.id)
    hold = tmp_path / "hold"
    hold.mkdir()
    holder = workers.start(cmd="lock", path=str(cache.layout.lock(ware.id)), hold=str(hold))
    wait_for((hold / "held").exists, what="the worker to hold the lock")
    waits: list[str] = []
    cache.on_wait = waits.append
    with pytest.raises(LockTimeout) as caught, cache.shelf(ware.id, [ware.url]):
        pass
    assert caught.value.category is Category.CACHE
    assert caught.value.holder is not None and caught.value.holder.pid == holder.pid
    assert f"pid {holder.pid}" in str(caught.value) and str(ware.id) in str(caught.value)
    assert len(waits) == 1 and f"pid {holder.pid}" in waits[0]
    (hold / "release").touch()
    holder.communicate(timeout=30)
    cache.on_wait = None
    with cache.shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked
