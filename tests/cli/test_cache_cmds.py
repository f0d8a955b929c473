"""``repeatr cache ls|gc|verify`` through the real command line."""

from __future__ import annotations

from pathlib import Path

from repeatr.cache import Cache
from repeatr.model.wareid import WareID

from .conftest import FIXTURES, SANS_BASE, WITH_BASE, Repeatr


def _fill(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    for ware, fixture in ((WITH_BASE, "tar_withBase.tgz"), (SANS_BASE, "tar_sansBase.tgz")):
        with cache.shelf(WareID.parse(ware), [f"file://{FIXTURES / fixture}"]):
            pass


def test_ls_gc_verify(repeatr: Repeatr, tmp_path: Path) -> None:
    assert repeatr("cache", "ls").stdout.strip() == "(cache is empty)"
    _fill(tmp_path)
    listing = repeatr("cache", "ls", "--format", "json").events()
    (result,) = listing
    assert sorted(s["ware"] for s in result["shelves"]) == sorted([WITH_BASE, SANS_BASE])
    assert repeatr("cache", "verify").code == 0
    gc = repeatr("cache", "gc", "--max-size", "0")
    assert gc.code == 0 and "removed 2 shelves" in gc.stdout
    assert repeatr("cache", "ls").stdout.strip() == "(cache is empty)"


def test_verify_finds_a_changed_shelf(repeatr: Repeatr, tmp_path: Path) -> None:
    _fill(tmp_path)
    shelf = next(p for p in (tmp_path / "cache" / "cache" / "tar" / "fileset").rglob("ab"))
    shelf.write_text("tampered")
    res = repeatr("cache", "verify")
    assert res.code == 9
    assert WITH_BASE.split(":")[1] in res.stderr


def test_gc_rejects_a_bad_size(repeatr: Repeatr) -> None:
    res = repeatr("cache", "gc", "--max-size", "lots")
    assert res.code == 1 and "--max-size" in res.stderr
