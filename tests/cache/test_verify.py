"""verify: any change to a shelf is found, including a retargeted symlink."""

from __future__ import annotations

import os
from pathlib import Path

from repeatr.cache import Cache
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import Filters
from repeatr.model.wareid import TAR
from tests.cache.conftest import make_ware


def _shelve(tmp_path: Path, root: Path) -> tuple[Cache, Path]:
    ware = make_ware(tmp_path / "w.tgz", {"file": b"content", "other": b"x", "link": "file"})
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        return cache, handle.path


def test_intact_shelves_pass(tmp_path: Path, root: Path) -> None:
    cache, _ = _shelve(tmp_path, root)
    assert cache.verify() == []


def test_changed_file_is_found(tmp_path: Path, root: Path) -> None:
    cache, shelf = _shelve(tmp_path, root)
    st = os.lstat(shelf / "file")
    (shelf / "file").write_bytes(b"CONTENT")
    os.utime(shelf / "file", ns=(st.st_atime_ns, st.st_mtime_ns))
    problems = cache.verify()
    assert [p.ware for p in problems] == [cache.ls()[0].ware]
    assert problems[0].expected != problems[0].actual


def test_retargeted_symlink_is_found(tmp_path: Path, root: Path) -> None:
    cache, shelf = _shelve(tmp_path, root)
    before_tar = pack_dir(shelf, None, filters=Filters(), packtype=TAR)
    st, dir_st = os.lstat(shelf / "link"), os.lstat(shelf)
    os.unlink(shelf / "link")
    os.symlink("other", shelf / "link")
    # Put every mtime back: only the link's target differs now.
    os.utime(shelf / "link", ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    os.utime(shelf, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
    # The original's tar hash cannot see it...
    assert pack_dir(shelf, None, filters=Filters(), packtype=TAR) == before_tar
    # ...the recorded strict hash does.
    problems = cache.verify()
    assert len(problems) == 1 and "changed" in problems[0].reason
