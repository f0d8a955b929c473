"""The archive reader, on archives written by GNU tar and by Python's tarfile."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import EntryType
from repeatr.fileset.reader import clean_name, read_archive
from repeatr.fileset.scan import scan_stream

from .trees import MTIME, gnu_tar, info, listing, make_tree, py_tar, sha384


def _entries(data: bytes) -> dict[str, object]:
    out = {}
    with read_archive(io.BytesIO(data)) as members:
        for m in members:
            out[m.entry.name] = m.entry
    return out


def _corrupt(data: bytes) -> FilesetError:
    with pytest.raises(FilesetError) as caught:
        scan_stream(io.BytesIO(data))
    assert caught.value.category is Category.WARE_CORRUPT
    return caught.value


@pytest.mark.parametrize("fmt", ["gnu", "oldgnu", "posix", "ustar"])
def test_gnu_tar_formats_read_back_the_tree(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    make_tree(src)
    long_name = "d" * 90 + "/" + "e" * 90 + "/" + "f" * 120
    if fmt == "ustar":  # a 120-byte leaf does not fit ustar at all
        (src / long_name).unlink()
    data = gnu_tar(src, f"--format={fmt}")
    got = {name: (etype, link, digest) for name, etype, link, digest in listing(data)}
    assert got["."][0] is EntryType.DIR
    assert got["a.txt"] == (EntryType.FILE, "", sha384(b"alpha\n"))
    assert got["a/b"] == (EntryType.FILE, "", sha384(b"x" * 5000))
    big = (src / "a" / "deep" / "er" / "big").read_bytes()
    assert got["a/deep/er/big"] == (EntryType.FILE, "", sha384(big))
    assert got["link"][:2] == (EntryType.SYMLINK, "a/b")
    assert got["fifo"][0] is EntryType.FIFO
    assert got["empty"][0] is EntryType.DIR
    if fmt != "ustar":
        assert got[long_name] == (EntryType.FILE, "", sha384(b"long name"))


def test_metadata_fields(tmp_path: Path) -> None:
    data = py_tar(
        [
            (info("./x", mode=0o4755, uid=123456789, gid=7, mtime=MTIME + 0.5), b"1"),
            (info("./d", tarfile.DIRTYPE, mode=0o1777, uid=0, gid=0), None),
            (info("./l", tarfile.SYMTYPE, mode=0o777, linkname="../../etc/passwd"), None),
        ]
    )
    e = _entries(data)
    x = e["x"]
    assert (x.type, x.mode, x.uid, x.gid, x.mtime, x.mtime_ns, x.size) == (  # type: ignore[attr-defined]
        EntryType.FILE,
        0o4755,
        123456789,
        7,
        MTIME,
        500_000_000,
        1,
    )
    assert e["d"].mode == 0o1777  # type: ignore[attr-defined]
    # A symlink target is data, not a path we resolve: it may point anywhere.
    assert e["l"].linkname == "../../etc/passwd"  # type: ignore[attr-defined]


def test_gnu_posix_format_keeps_mtime_nanoseconds(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"")
    os.utime(src / "f", ns=(MTIME * 10**9, MTIME * 10**9 + 123456789))
    e = _entries(gnu_tar(src, "--format=posix", members=("f",)))
    assert (e["f"].mtime, e["f"].mtime_ns) == (MTIME, 123456789)  # type: ignore[attr-defined]


def test_xattrs_from_schily_pax_records() -> None:
    ti = info("f")
    ti.pax_headers = {"SCHILY.xattr.user.greeting": "hello", "SCHILY.xattr.user.e": ""}
    e = _entries(py_tar([(ti, b"")]))
    assert e["f"].xattrs == {"user.greeting": b"hello", "user.e": b""}  # type: ignore[attr-defined]


def test_pax_global_header_is_skipped() -> None:
    data = py_tar([(info("f"), b"x")], pax_headers={"comment": "global"})
    assert b"pax_global_header" in data or b"GlobalHead" in data or data[156:157] == b"g"
    assert [name for name, *_ in listing(data)] == ["f"]


def test_hardlinks_are_reported_as_such(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "one").write_bytes(b"same")
    os.link(src / "one", src / "two")
    got = listing(gnu_tar(src, members=("one", "two")))
    assert got[0] == ("one", EntryType.FILE, "", sha384(b"same"))
    assert got[1][:3] == ("two", EntryType.HARDLINK, "one")


@pytest.mark.root
def test_device_nodes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(src / "blk", 0o600 | 0o060000, os.makedev(7, 300))
    e = _entries(gnu_tar(src, members=("null", "blk")))
    null, blk = e["null"], e["blk"]
    assert (null.type, null.devmajor, null.devminor) == (EntryType.CHAR, 1, 3)  # type: ignore[attr-defined]
    assert (blk.type, blk.devmajor, blk.devminor) == (EntryType.BLOCK, 7, 300)  # type: ignore[attr-defined]


def test_sparse_files_read_with_their_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(3 << 20)
        f.write(b"tail")
    content = (src / "sparse").read_bytes()
    got = listing(gnu_tar(src, "--sparse", "--format=posix", members=("sparse",)))
    assert got == [("sparse", EntryType.FILE, "", sha384(content))]


def test_non_utf8_names_round_trip_as_surrogates(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    raw = b"caf\xe9"
    (src / os.fsdecode(raw)).write_bytes(b"")
    data = gnu_tar(src, "--format=gnu", members=(os.fsdecode(raw),))
    names = [name for name, *_ in listing(data)]
    assert [os.fsencode(n) for n in names] == [raw]


def test_blocks_cannot_be_read_after_moving_on() -> None:
    data = py_tar([(info("a"), b"1"), (info("b"), b"2")])
    with read_archive(io.BytesIO(data)) as members:
        first = next(members)
        second = next(members)
        with pytest.raises(RuntimeError):
            list(first.blocks())
        assert b"".join(second.blocks()) == b"2"


def test_unread_content_is_skipped() -> None:
    data = gzip.compress(py_tar([(info("a"), b"1" * 100_000), (info("b"), b"2")]))
    with read_archive(io.BytesIO(data)) as members:
        out = {m.entry.name: m for m in members}
    assert set(out) == {"a", "b"}


def test_non_seekable_stream(tmp_path: Path) -> None:
    r, w = os.pipe()
    data = gzip.compress(py_tar([(info("f"), b"piped")]))
    os.write(w, data)
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as pipe:
        got = listing_from(pipe)
    assert got == [("f", sha384(b"piped"))]


def listing_from(stream: io.RawIOBase) -> list[tuple[str, bytes]]:
    with read_archive(stream) as members:  # type: ignore[arg-type]
        return [(m.entry.name, m.read_digest()) for m in members]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("./", "."),
        (".", "."),
        ("./a", "a"),
        ("a/", "a"),
        ("a//b", "a/b"),
        ("./a/./b/", "a/b"),
        ("a/../b", "b"),
        (".hidden", ".hidden"),
        ("a/.b", "a/.b"),
        ("...", "..."),
    ],
)
def test_clean_name(raw: str, clean: str) -> None:
    assert clean_name(raw) == clean


@pytest.mark.parametrize("raw", ["/etc/passwd", "..", "../x", "./../x", "a/../../x", ""])
def test_unsafe_names_are_rejected(raw: str) -> None:
    with pytest.raises(FilesetError) as caught:
        clean_name(raw)
    assert caught.value.category is Category.WARE_CORRUPT


@pytest.mark.parametrize("name", ["/abs/file", "../escape", "ok/../../escape"])
def test_unsafe_member_names_fail_the_archive(name: str) -> None:
    err = _corrupt(py_tar([(info("fine"), b""), (info(name), b"x")]))
    assert name.lstrip("/").split("/")[-1] in str(err)


def test_hardlink_target_escaping_is_rejected() -> None:
    _corrupt(py_tar([(info("h", tarfile.LNKTYPE, linkname="../outside"), None)]))


def test_truncated_gzip_is_corrupt() -> None:
    data = gzip.compress(py_tar([(info("f"), os.urandom(200_000))]))
    err = _corrupt(data[: len(data) // 2])
    assert err.__cause__ is not None


def test_truncated_tar_is_corrupt() -> None:
    data = py_tar([(info("f"), os.urandom(200_000))])
    _corrupt(data[:100_000])


def test_garbage_is_corrupt() -> None:
    _corrupt(b"<html><body>502 Bad Gateway</body></html>\n" * 20)
    _corrupt(gzip.compress(b"not a tar at all" * 100))


def test_empty_input_is_corrupt() -> None:
    _corrupt(b"")


def test_bad_gzip_crc_is_corrupt() -> None:
    data = bytearray(gzip.compress(py_tar([(info("f"), b"content" * 100)])))
    data[-8] ^= 0xFF  # the CRC32 in the trailer
    _corrupt(bytes(data))


def test_empty_tar_has_no_members() -> None:
    assert listing(b"\0" * 10240) == []
    assert str(scan_stream(io.BytesIO(gzip.compress(b"\0" * 1024)))) == "tar:-"
