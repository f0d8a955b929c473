"""verify: any change to a shelf is found, including a retargeted symlink.

The strict ID is recorded from the unpack itself (no second read of the
tree) and is exact: sub-second mtimes and xattrs count.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from repeatr.cache import Cache, record
from repeatr.fileset import pack
from repeatr.fileset.pack import hash_dir_exact, pack_dir, scan_stream
from repeatr.model.filters import Filters
from repeatr.model.wareid import TAR, TAR_STRICT
from tests.cache.conftest import Ware, make_ware


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


def _xattr_ware(path: Path) -> Ware:
    """A PAX ware with sub-second mtimes, xattrs, and a symlink archived 0755."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in [
            ("./", tarfile.DIRTYPE, {"SCHILY.xattr.user.shelf": "root"}),
            ("./d/", tarfile.DIRTYPE, {"SCHILY.xattr.user.dir": "d"}),
            ("./d/f", tarfile.REGTYPE, {"SCHILY.xattr.user.mime_type": "text/plain"}),
            ("./link", tarfile.SYMTYPE, {}),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 1600000000.75, 0o755
            info.uid, info.gid = os.getuid(), os.getgid()
            info.pax_headers = extra
            if kind == tarfile.SYMTYPE:
                info.linkname = "d/f"
            content = b"content" if kind == tarfile.REGTYPE else b""
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content else None)
    data = gzip.compress(buf.getvalue(), mtime=0)
    path.write_bytes(data)
    return Ware(scan_stream(io.BytesIO(data)), path)


def test_exact_metadata_is_recorded_and_verified(tmp_path: Path, root: Path) -> None:
    ware = _xattr_ware(tmp_path / "x.tgz")
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        shelf = handle.path
        assert handle.record.strict == str(hash_dir_exact(shelf))
        assert handle.record.strict_exact
    assert cache.verify() == []

    # A changed xattr, or an mtime moved by a nanosecond, is a change.
    os.setxattr(shelf / "d" / "f", "user.mime_type", b"text/html")
    assert [p.reason for p in cache.verify()] == ["contents changed since unpacked"]
    os.setxattr(shelf / "d" / "f", "user.mime_type", b"text/plain")
    assert cache.verify() == []
    st = os.lstat(shelf / "d" / "f")
    os.utime(shelf / "d" / "f", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert len(cache.verify()) == 1


def test_a_cold_shelf_reads_the_tree_once(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strict ID comes from the unpack: nothing re-walks the new shelf."""
    ware = _xattr_ware(tmp_path / "x.tgz")

    def no_second_read(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the shelf was re-read after unpacking")

    monkeypatch.setattr(pack, "_walk", no_second_read)
    with Cache(root).shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked
    monkeypatch.undo()
    assert Cache(root).verify() == []


def test_records_from_older_versions_still_verify(tmp_path: Path, root: Path) -> None:
    """Before the strict ID was exact, records held pack_dir's strict hash."""
    ware = make_ware(tmp_path / "w.tgz", {"file": b"content", "link": "file"})
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        shelf = handle.path
    path = cache.layout.record(ware.id)
    old = json.loads(path.read_text())
    del old["strict_exact"]
    old["unpacked_strict"] = old["strict"]
    old["strict"] = str(pack_dir(shelf, None, filters=Filters(), packtype=TAR_STRICT))
    assert old["strict"] != old["unpacked_strict"]  # the ware has sub-second mtimes
    path.write_text(json.dumps(old))
    found = record.read(path, ware.id)
    assert found is not None and not found.strict_exact
    assert cache.verify() == []
    (shelf / "file").write_bytes(b"CONTENT")
    assert len(cache.verify()) == 1


# --- a shelf whose record is lost: re-hashed against its ware ID -------------------


def _lose_record(cache: Cache, ware: Ware, how: str) -> None:
    path = cache.layout.record(ware.id)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:10])
    elif how == "deleted":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    else:  # another ware's record, copied over this one
        doc = json.loads(path.read_text())
        doc["ware"] = "tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ"
        path.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["truncated", "deleted", "empty", "another ware's"])
def test_a_damaged_shelf_with_a_lost_record_is_not_laundered(
    tmp_path: Path, root: Path, how: str
) -> None:
    """Issue 12.5: delete a file, lose the record; the next use must not bless it."""
    ware = make_ware(tmp_path / "w.tgz", {"file": b"content", "other": b"x", "link": "file"})
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        shelf = handle.path
    (shelf / "other").unlink()
    _lose_record(cache, ware, how)

    problems = cache.verify()
    assert [p.ware for p in problems] == [ware.id]
    assert problems[0].expected == str(ware.id) and problems[0].actual != str(ware.id)

    with cache.shelf(ware.id, [ware.url]) as handle:
        assert handle.unpacked  # discarded and unpacked afresh, not adopted
        assert not handle.record.adopted
        assert (handle.path / "other").read_bytes() == b"x"
    assert cache.verify() == []
    assert os.listdir(cache.layout.tmp) == []


def test_an_intact_shelf_with_a_lost_record_is_kept(tmp_path: Path, root: Path) -> None:
    """Sub-second mtimes in the archive: the ware ID check still matches the unpacked tree."""
    ware = make_ware(tmp_path / "w.tgz", {"file": b"content", "link": "file"})
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        strict = handle.record.strict
    _lose_record(cache, ware, "truncated")
    assert cache.verify() == []
    with cache.shelf(ware.id, []) as handle:  # no sources: it must not need a fetch
        assert not handle.unpacked and handle.record.adopted
        assert handle.record.strict == strict
    assert cache.verify() == []


def test_a_damaged_shelf_in_use_is_not_pulled_from_under_its_user(
    tmp_path: Path, root: Path
) -> None:
    from repeatr.errors import CacheError

    ware = make_ware(tmp_path / "w.tgz", {"file": b"content", "other": b"x"})
    cache = Cache(root)
    with cache.shelf(ware.id, [ware.url]) as handle:
        (handle.path / "other").unlink()
        _lose_record(cache, ware, "deleted")
        with pytest.raises(CacheError) as info, cache.shelf(ware.id, [ware.url]):
            pass
        assert str(ware.id) in str(info.value)
        assert handle.path.is_dir()
