"""Single-file wares: a fileset whose root is one regular file (rio packs a file path so).

The tar holds one member named ``.``; the tree hash is that one record's hash
(spec/compat.md "Tree hash", written out by hand below), so the same file
gives the same ID whether GNU tar, rio or we wrote the archive.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.pack import hash_dir_exact, pack_dir, scan_stream
from repeatr.fileset.unpack import TMP_PREFIX, unpack_stream
from repeatr.model.base58 import b58encode
from repeatr.model.filters import PACK_FLATTEN, UNPACK_LOSSLESS, UNPACK_LOWPRIV, Filters
from repeatr.model.wareid import TAR, TAR_STRICT, WareID
from tests.fileset import hostile as h

CONTENT = b"hello from one file\n"


def _by_hand(content: bytes, mode: int, uid: int, gid: int, mtime: int) -> WareID:
    """The original's record hash of a root file, CBOR written out byte by byte."""

    def text(s: str) -> bytes:
        return bytes([0x60 + len(s)]) + s.encode()

    def uint(n: int) -> bytes:
        if n < 24:
            return bytes([n])
        if n < 256:
            return b"\x18" + n.to_bytes(1, "big")
        if n < 65536:
            return b"\x19" + n.to_bytes(2, "big")
        return b"\x1a" + n.to_bytes(4, "big")

    meta = (
        b"\xa7"
        + text("n") + text(".")
        + text("t") + text("f")
        + text("p") + uint(mode)
        + text("u") + uint(uid)
        + text("g") + uint(gid)
        + text("m") + uint(mtime)
        + text("mn") + uint(0)
    )
    record = b"\xa2" + text("m") + meta + text("h") + b"\x58\x30" + hashlib.sha384(content).digest()
    return WareID(TAR, b58encode(hashlib.sha384(record).digest()))


def _file(tmp_path: Path, mode: int = 0o640) -> Path:
    path = tmp_path / "hello.txt"
    path.write_bytes(CONTENT)
    os.chmod(path, mode)
    os.chown(path, 1000, 1000)
    os.utime(path, (1262304000, 1262304000))
    return path


def test_pack_scan_unpack_round_trip(tmp_path: Path) -> None:
    src = _file(tmp_path)
    out = io.BytesIO()
    ware = pack_dir(src, out, filters=Filters())
    assert ware == _by_hand(CONTENT, 0o640, 1000, 1000, 1262304000)
    assert pack_dir(src, None, filters=Filters()) == ware
    # The archive: one member, the root, named "." as rio writes it.
    listing = subprocess.run(
        ["tar", "-tzvf", "-"], input=out.getvalue(), capture_output=True, check=True
    ).stdout.decode()
    assert listing.splitlines()[0].split()[-1] == "." and len(listing.splitlines()) == 1
    assert scan_stream(io.BytesIO(out.getvalue())) == ware

    dest = tmp_path / "unpacked"
    result = unpack_stream(io.BytesIO(out.getvalue()), dest, expected=ware, filters=UNPACK_LOSSLESS)
    assert result.single_file and result.ware_id == ware == result.filtered_id
    assert dest.read_bytes() == CONTENT
    st = os.lstat(dest)
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o640, 1000, 1000, 1262304000)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]
    # The cache's exact re-hash of a file shelf is the unpack's strict ID.
    assert hash_dir_exact(dest) == result.strict_id
    assert result.strict_id.packtype == TAR_STRICT


def test_filters_apply_to_the_root_file(tmp_path: Path) -> None:
    src = _file(tmp_path)
    os.chown(src, 0, 0)
    os.utime(src, (1600000000, 1600000000))
    assert pack_dir(src, None, filters=PACK_FLATTEN) == _by_hand(CONTENT, 0o640, 1000, 1000, 1262304000)
    data = io.BytesIO()
    ware = pack_dir(src, data, filters=Filters())
    dest = tmp_path / "mine"
    result = unpack_stream(io.BytesIO(data.getvalue()), dest, expected=ware, filters=UNPACK_LOWPRIV)
    assert result.ware_id == ware
    assert os.lstat(dest).st_uid == os.geteuid()


def test_a_tar_made_by_gnu_tar_has_the_same_id(tmp_path: Path) -> None:
    src = _file(tmp_path, 0o644)
    made = tmp_path / "gnu.tgz"
    subprocess.run(
        ["tar", "-czf", os.fspath(made), "--transform", "s,.*,.,", "-C", os.fspath(tmp_path), "hello.txt"],
        check=True,
    )
    with open(made, "rb") as f:
        assert scan_stream(f) == pack_dir(src, None, filters=Filters())


def test_a_root_file_with_company_is_corrupt(tmp_path: Path) -> None:
    for members in (
        [h.file(".", CONTENT), h.file("other", b"x")],
        [h.file("other", b"x"), h.file(".", CONTENT)],
    ):
        data = h.build(members)
        with pytest.raises(FilesetError) as info:
            scan_stream(io.BytesIO(data))
        assert info.value.category is Category.WARE_CORRUPT
        dest = tmp_path / "d"
        with pytest.raises(FilesetError) as info:
            unpack_stream(io.BytesIO(data), dest, expected=None, filters=UNPACK_LOSSLESS)
        assert info.value.category is Category.WARE_CORRUPT
        assert not os.path.lexists(dest)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_a_root_symlink_is_still_refused(tmp_path: Path) -> None:
    data = h.build([h.symlink(".", "elsewhere")])
    with pytest.raises(FilesetError) as info:
        scan_stream(io.BytesIO(data))
    assert info.value.category is Category.WARE_CORRUPT
    link = tmp_path / "link"
    link.symlink_to(_file(tmp_path))
    with pytest.raises(FilesetError) as info:
        pack_dir(link, None, filters=Filters())
    assert info.value.category is Category.PACK_INVALID
