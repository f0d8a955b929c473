"""``zip:`` wares: scanned and unpacked with the metadata rio read, hashed as tar hashes a tree."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.pack import pack_dir, scan_stream
from repeatr.fileset.unpack import TMP_PREFIX, unpack_stream
from repeatr.model.filters import UNPACK_LOSSLESS, UNPACK_LOWPRIV, Filters
from repeatr.model.wareid import TAR, ZIP, WareID
from tests.rio import FIXTURES, ZIP_WITH_BASE

FIXTURE = FIXTURES / "zip_withbase.zip"


def test_published_vector() -> None:
    with open(FIXTURE, "rb") as f:
        assert str(scan_stream(f, packtype=ZIP)) == ZIP_WITH_BASE
    # Read from a pipe-like stream too (a zip is read from its end: spooled).
    data = FIXTURE.read_bytes()

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self._inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: bytearray) -> int:  # type: ignore[override]
            return self._inner.readinto(b)

    assert str(scan_stream(io.BufferedReader(Unseekable()), packtype=ZIP)) == ZIP_WITH_BASE


def test_unpack_then_pack_as_tar_gives_the_same_hash(tmp_path: Path) -> None:
    ware = WareID.parse(ZIP_WITH_BASE)
    dest = tmp_path / "out"
    with open(FIXTURE, "rb") as f:
        result = unpack_stream(f, dest, expected=ware, filters=UNPACK_LOSSLESS)
    assert result.ware_id == ware == result.filtered_id
    st = os.lstat(dest / "ab")
    assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (501, 20, 1433013083)
    # The same tree, packed as a tar: the same tree hash under the other packtype.
    assert pack_dir(dest, None, filters=Filters()) == WareID(TAR, ware.hash)
    with open(FIXTURE, "rb") as f:
        mine = unpack_stream(f, tmp_path / "mine", expected=ware, filters=UNPACK_LOWPRIV)
    assert mine.ware_id == ware and mine.filtered_id.packtype == ZIP
    assert mine.filtered_id != ware  # uid=mine changed the owners


def _zip(members: list[tuple[zipfile.ZipInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return out.getvalue()


def _info(name: str, mode: int, date: tuple[int, int, int, int, int, int]) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def test_metadata_without_extra_fields(tmp_path: Path) -> None:
    # No owner field: rio's default 1000:1000. No UT field: the DOS time, as UTC.
    date = (2001, 2, 3, 4, 5, 6)
    data = _zip(
        [
            (_info("d/", stat.S_IFDIR | 0o750, date), b""),
            (_info("d/f", stat.S_IFREG | 0o640, date), b"content"),
            (_info("d/link", stat.S_IFLNK | 0o777, date), b"f"),
            (_info("top", 0o600, date), b"no type bits: a file"),
        ]
    )
    ware = scan_stream(io.BytesIO(data), packtype=ZIP)
    dest = tmp_path / "out"
    unpack_stream(io.BytesIO(data), dest, expected=ware, filters=UNPACK_LOSSLESS)
    st = os.lstat(dest / "d" / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (
        0o640, 1000, 1000, 981173106,
    )
    assert os.readlink(dest / "d" / "link") == "f"
    assert stat.S_IMODE(os.lstat(dest / "d").st_mode) == 0o750
    assert (dest / "top").read_bytes() == b"no type bits: a file"
    # The root, absent from the zip, is inferred as for a tar.
    assert os.lstat(dest).st_uid == 0 and int(os.lstat(dest).st_mtime) == 1262304000
    assert pack_dir(dest, None, filters=Filters()).hash == ware.hash


def test_corrupt_and_hostile_zips(tmp_path: Path) -> None:
    good = FIXTURE.read_bytes()
    cases = [
        good[: len(good) // 2],
        b"not a zip at all",
        _zip([(_info("../escape", stat.S_IFREG | 0o644, (2001, 1, 1, 0, 0, 0)), b"x")]),
        _zip([(_info("dev", stat.S_IFCHR | 0o644, (2001, 1, 1, 0, 0, 0)), b"")]),
    ]
    for n, data in enumerate(cases):
        with pytest.raises(FilesetError) as info:
            scan_stream(io.BytesIO(data), packtype=ZIP)
        assert info.value.category is Category.WARE_CORRUPT
        dest = tmp_path / f"d{n}"
        with pytest.raises(FilesetError):
            unpack_stream(
                io.BytesIO(data), dest, expected=WareID.parse(ZIP_WITH_BASE), filters=UNPACK_LOSSLESS
            )
        assert not os.path.lexists(dest)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_zip_made_by_info_zip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("zipped\n")
    os.chmod(src / "sub" / "f", 0o751)
    os.chown(src / "sub" / "f", 1234, 5678)
    os.utime(src / "sub" / "f", (1500000000, 1500000000))
    made = tmp_path / "made.zip"
    subprocess.run(["zip", "-q", "-r", "-y", os.fspath(made), "sub"], cwd=src, check=True)
    with open(made, "rb") as f:
        ware = scan_stream(f, packtype=ZIP)
    dest = tmp_path / "out"
    with open(made, "rb") as f:
        unpack_stream(f, dest, expected=ware, filters=UNPACK_LOSSLESS)
    st = os.lstat(dest / "sub" / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)) == (
        0o751, 1234, 5678, 1500000000,
    )
    assert pack_dir(dest, None, filters=Filters()).hash == ware.hash
