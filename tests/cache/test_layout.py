"""Where things live: rio's shelf paths, our bookkeeping beside them, modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from repeatr.cache import Cache
from repeatr.cache.layout import Layout, TempName
from repeatr.errors import UsageError
from repeatr.fileset.unpack import unpack_stream
from repeatr.model.filters import UNPACK_LOSSLESS
from repeatr.model.wareid import TAR_STRICT, WareID
from repeatr.owner import Owner
from tests.cache.conftest import WITH_BASE, fixture_ware


def test_shelf_path_is_rios(root: Path) -> None:
    # rio: cache.ShelfFor = "<type>/fileset/<hash[0:3]>/<hash[3:6]>/<hash>" under $RIO_CACHE.
    h = WITH_BASE.hash
    assert Layout(root).shelf(WITH_BASE) == root / "cache" / "tar" / "fileset" / h[:3] / h[3:6] / h


def test_ids_that_could_escape_are_refused(root: Path) -> None:
    for bad in (
        WareID("tar", "../../etc"),
        WareID("tar", "-"),
        WareID("rar", WITH_BASE.hash),
        WareID("git", "../" + "0" * 37),
        WareID("git", WITH_BASE.hash),  # a git hash is 40 hex digits
    ):
        with pytest.raises(UsageError):
            Layout(root).shelf(bad)
    # zip and git wares have shelves where rio put them.
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert Layout(root).shelf(WareID("git", commit)) == (
        root / "cache" / "git" / "fileset" / "012" / "345" / commit
    )
    assert Layout(root).shelf(WareID("zip", WITH_BASE.hash)).parts[-6:-3] == ("cache", "zip", "fileset")


def test_temp_names_round_trip(root: Path) -> None:
    owner = Owner.current()
    for ware in (WITH_BASE, WareID(TAR_STRICT, WITH_BASE.hash)):
        path = Layout(root).temp_name("unpack", ware, owner)
        assert TempName.parse(path.name) == TempName("unpack", ware, owner)
    assert TempName.parse(".repeatr-tmp-abc") is None


def test_cache_dirs_are_root_only(tmp_path: Path, root: Path) -> None:
    served = fixture_ware(tmp_path, "tar_withBase.tgz", WITH_BASE)
    with Cache(root).shelf(WITH_BASE, [served.url]):
        pass
    for path in (root, root / "cache", root / "meta", root / "tmp"):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700, path


def test_a_shelf_rio_made_is_used_and_recorded(tmp_path: Path, root: Path) -> None:
    """rio commits its unpack straight to the shelf path, with no bookkeeping of ours."""
    layout = Layout(root)
    shelf = layout.shelf(WITH_BASE)
    shelf.parent.mkdir(parents=True)
    with (fixture_ware(tmp_path, "tar_withBase.tgz", WITH_BASE).path).open("rb") as stream:
        unpack_stream(stream, shelf, expected=WITH_BASE, filters=UNPACK_LOSSLESS)
    cache = Cache(root)
    assert [(i.ware, i.strict) for i in cache.ls()] == [(WITH_BASE, None)]
    assert cache.verify() == []  # no record: checked against its ware ID, which it matches

    with cache.shelf(WITH_BASE, []) as handle:  # no sources needed: it is there
        assert not handle.unpacked
        assert handle.record.adopted
    assert cache.verify() == []
