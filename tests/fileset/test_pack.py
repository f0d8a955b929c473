"""Packing real directories: IDs, round trips, determinism, filters."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import EntryType
from repeatr.fileset.pack import hash_dir_exact, pack_dir, scan_stream
from repeatr.fileset.unpack import unpack_stream
from repeatr.model import filters as F
from repeatr.model.filters import Filters
from repeatr.model.wareid import TAR, TAR_STRICT

from .trees import (
    FIXTURES,
    KITCHEN_SINK,
    MTIME,
    SANS_BASE,
    WITH_BASE,
    gnu_extract,
    gnu_tar,
    info,
    listing,
    make_tree,
    py_tar,
)

KEEP = Filters()


def _pack(src: Path, filters: Filters = KEEP, packtype: str = TAR) -> tuple[str, bytes]:
    out = io.BytesIO()
    ware = pack_dir(src, out, filters=filters, packtype=packtype)
    return str(ware), out.getvalue()


@pytest.mark.root
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("tar_withBase.tgz", WITH_BASE),
        ("tar_kitchenSink.tgz", KITCHEN_SINK),
    ],
)
def test_packing_an_extracted_fixture_gives_its_published_id(
    tmp_path: Path, fixture: str, expected: str
) -> None:
    dest = tmp_path / "x"
    gnu_extract((FIXTURES / fixture).read_bytes(), dest, "-z", "--same-owner", "-p")
    ware, data = _pack(dest)
    assert ware == expected
    assert str(scan_stream(io.BytesIO(data))) == expected


@pytest.mark.root
def test_sans_base_packs_to_its_id_once_the_root_is_as_inferred(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    gnu_extract((FIXTURES / "tar_sansBase.tgz").read_bytes(), dest, "-z", "--same-owner", "-p")
    os.chown(dest, 0, 0)
    dest.chmod(0o755)
    os.utime(dest, (MTIME, MTIME))
    assert _pack(dest)[0] == SANS_BASE


def test_round_trip_pack_then_scan(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    for packtype in (TAR, TAR_STRICT):
        ware, data = _pack(src, packtype=packtype)
        assert ware.startswith(packtype + ":") and not ware.endswith(":-")
        assert str(scan_stream(io.BytesIO(data), packtype=packtype)) == ware


def test_hash_only_equals_hash_with_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    assert str(pack_dir(src, None, filters=F.PACK_FLATTEN)) == _pack(src, F.PACK_FLATTEN)[0]


def test_same_tree_packs_byte_identically(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    first = _pack(src, F.PACK_FLATTEN)
    second = _pack(src, F.PACK_FLATTEN)
    assert first == second
    # a copy made elsewhere, with other inode numbers and times, too
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", os.fspath(src), os.fspath(copy)], check=True)
    os.utime(copy, (0, 0))
    assert _pack(copy, F.PACK_FLATTEN) == first


def test_our_id_equals_the_id_of_gnu_tars_archive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    for fmt in ("gnu", "posix"):
        # GNU tar's posix format keeps sub-second mtimes; we truncate them.
        extra = (f"--mtime=@{MTIME}",) if fmt == "posix" else ()
        gnu = scan_stream(io.BytesIO(gnu_tar(src, f"--format={fmt}", *extra)))
        assert _pack(src)[0] == str(gnu)


def test_gnu_tar_and_tarfile_read_our_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    (src / "a" / ("x" * 200)).write_bytes(b"long leaf: pax path")
    os.symlink("t" * 150, src / "longlink")
    (src / "fifo").unlink()  # diff cannot compare fifos
    _, data = _pack(src)
    dest = tmp_path / "dest"
    gnu_extract(data, dest, "-z")
    diff = subprocess.run(
        ["diff", "-r", "--no-dereference", os.fspath(src), os.fspath(dest)],
        capture_output=True,
        text=True,
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        names = tf.getnames()
    assert names[0] == "."
    assert "./a/" + "x" * 200 in names
    assert "./longlink" in names


def test_entry_names_and_types(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    with tarfile.open(fileobj=io.BytesIO(_pack(src)[1]), mode="r:gz") as tf:
        raw = [m.name for m in tf.getmembers()]
        kinds = {m.name: m.type for m in tf.getmembers()}
    # tarfile strips the trailing "/"; every name starts with "./"
    assert all(n == "." or n.startswith("./") for n in raw)
    assert kinds["./fifo"] == tarfile.FIFOTYPE
    assert kinds["./link"] == tarfile.SYMTYPE
    # children are in bytewise order, each dir before its contents
    top = [n for n in raw if n.count("/") == 1]
    assert top == sorted(top, key=os.fsencode)


def test_big_ids_go_into_pax_headers(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    ware, data = _pack(src, Filters(uid=3_000_000_000, gid=4_000_000))
    entries = {name: etype for name, etype, *_ in listing(data)}
    assert entries == {".": EntryType.DIR, "f": EntryType.FILE}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        f = tf.getmember("./f")
    assert (f.uid, f.gid) == (3_000_000_000, 4_000_000)
    assert str(scan_stream(io.BytesIO(data))) == ware


def test_hardlinks_on_disk_are_packed_as_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "one").write_bytes(b"same")
    os.link(src / "one", src / "two")
    got = {name: etype for name, etype, *_ in listing(_pack(src)[1])}
    assert got == {".": EntryType.DIR, "one": EntryType.FILE, "two": EntryType.FILE}


def test_sockets_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(src / "sock"))
        names = [name for name, *_ in listing(_pack(src)[1])]
    assert names == [".", "f"]


def test_missing_path_is_the_empty_id_and_writes_nothing(tmp_path: Path) -> None:
    out = io.BytesIO()
    assert str(pack_dir(tmp_path / "nope", out, filters=KEEP)) == "tar:-"
    assert str(pack_dir(tmp_path / "nope", None, filters=KEEP, packtype=TAR_STRICT)) == (
        "tar-strict:-"
    )
    assert out.getvalue() == b""


def test_a_fifo_is_not_packable(tmp_path: Path) -> None:
    # A regular file packs as a single-file ware (tests/fileset/test_single_file.py).
    os.mkfifo(tmp_path / "f")
    with pytest.raises(FilesetError) as caught:
        pack_dir(tmp_path / "f", None, filters=KEEP)
    assert caught.value.category is Category.PACK_INVALID


def test_filters_flatten_owner_and_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    os.utime(src / "f", (1, 1))
    _, data = _pack(src, F.PACK_FLATTEN)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        for m in tf.getmembers():
            assert (m.uid, m.gid, m.mtime) == (1000, 1000, MTIME)


def test_setid_reject_names_the_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "su").write_bytes(b"")
    (src / "bin" / "su").chmod(0o4755)
    with pytest.raises(FilesetError) as caught:
        pack_dir(src, io.BytesIO(), filters=F.PACK_CONSERVATIVE)
    assert caught.value.category is Category.FILTER_REJECTION
    assert "bin/su" in str(caught.value)
    ignored = _pack(src, Filters(setid="ignore"))[1]
    with tarfile.open(fileobj=io.BytesIO(ignored), mode="r:gz") as tf:
        assert tf.getmember("./bin/su").mode == 0o755


@pytest.mark.root
def test_devices_follow_the_dev_filter(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", 0o666 | 0o020000, os.makedev(1, 3))
    with pytest.raises(FilesetError) as caught:
        pack_dir(src, None, filters=Filters(dev="reject"))
    assert caught.value.category is Category.FILTER_REJECTION
    kept = {name: etype for name, etype, *_ in listing(_pack(src)[1])}
    assert kept["null"] is EntryType.CHAR
    dropped = [name for name, *_ in listing(_pack(src, Filters(dev="ignore"))[1])]
    assert dropped == ["."]


def test_progress_reports_content_bytes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    seen: list[int] = []
    pack_dir(src, None, filters=KEEP, progress=seen.append)
    assert seen and seen[-1] == 1000


# --- hash_dir_exact: the tree as it is on disk -------------------------------


def test_exact_hash_sees_nanoseconds_and_xattrs_that_packing_ignores(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)  # mtimes MTIME + 0.25
    packed = {t: pack_dir(src, None, filters=KEEP, packtype=t) for t in (TAR, TAR_STRICT)}
    exact = hash_dir_exact(src)
    assert exact.packtype == TAR_STRICT and exact != packed[TAR_STRICT]

    os.setxattr(src / "a.txt", "user.note", b"hi")
    with_xattr = hash_dir_exact(src)
    assert with_xattr != exact
    os.utime(src / "a.txt", ns=(0, MTIME * 10**9 + 250_000_001))
    assert hash_dir_exact(src) != with_xattr
    # Packing (compat.md step 5) still truncates mtimes and reads no xattrs.
    assert {t: pack_dir(src, None, filters=KEEP, packtype=t) for t in (TAR, TAR_STRICT)} == packed

    # With whole-second mtimes and no xattrs the two hashings agree.
    os.removexattr(src / "a.txt", "user.note")
    for path in [src, *src.rglob("*")]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    for packtype in (TAR, TAR_STRICT):
        assert hash_dir_exact(src, packtype=packtype) == pack_dir(
            src, None, filters=KEEP, packtype=packtype
        )


def test_exact_hash_covers_sockets_and_missing_paths(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    before = hash_dir_exact(src)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(src / "sock"))
        os.utime(src, ns=(0, 0))
        with_socket = hash_dir_exact(src)
    os.unlink(src / "sock")
    os.utime(src, ns=(0, 0))
    assert hash_dir_exact(src) != with_socket
    assert before.packtype == TAR_STRICT
    assert str(hash_dir_exact(tmp_path / "nope")) == "tar-strict:-"
    os.mkfifo(tmp_path / "f")
    with pytest.raises(FilesetError) as caught:
        hash_dir_exact(tmp_path / "f")
    assert caught.value.category is Category.PACK_INVALID


def _pax_ware_with_subseconds_and_xattrs() -> bytes:
    """Entries whose metadata ``pack_dir`` can't see: ns mtimes, xattrs (root,
    dir, file), a symlink whose archived mode Linux can't store; plus an
    implied directory and a fifo."""
    uid, gid = os.getuid(), os.getgid()

    def member(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
        ti = info(name, kind, uid=uid, gid=gid, **kw)  # type: ignore[arg-type]
        ti.mtime = MTIME + 0.375  # tarfile writes it as PAX "mtime" (exact in a float)
        return ti

    root = member("./", tarfile.DIRTYPE, mode=0o755)
    root.pax_headers = {"SCHILY.xattr.user.root": "r"}
    sub = member("./d/", tarfile.DIRTYPE, mode=0o750)
    sub.pax_headers = {"SCHILY.xattr.user.dir": "d", "SCHILY.xattr.user.empty": ""}
    f = member("./d/f")
    f.pax_headers = {"SCHILY.xattr.user.mime_type": "text/plain"}
    return py_tar(
        [
            (root, None),
            (sub, None),
            (f, b"content\n"),
            (member("./implied/g", mode=0o600), b"g"),
            (member("./link", tarfile.SYMTYPE, mode=0o755, linkname="d/f"), None),
            (member("./fifo", tarfile.FIFOTYPE, mode=0o640), None),
        ]
    )


@pytest.mark.parametrize("packtype", [TAR, TAR_STRICT])
def test_unpacks_strict_id_is_the_exact_hash_of_the_unpacked_tree(
    tmp_path: Path, packtype: str
) -> None:
    """What lets the cache record ``strict_id`` instead of re-reading the shelf."""
    data = _pax_ware_with_subseconds_and_xattrs()
    ware = scan_stream(io.BytesIO(data), packtype=packtype)
    dest = tmp_path / "dest"
    result = unpack_stream(io.BytesIO(data), dest, expected=ware, filters=KEEP)
    assert os.getxattr(dest / "d" / "f", "user.mime_type") == b"text/plain"
    assert os.lstat(dest / "d" / "f").st_mtime_ns % 10**9 == 375_000_000
    assert result.strict_id == hash_dir_exact(dest)
    assert result.filtered_id == hash_dir_exact(dest, packtype=packtype)
    # pack_dir's hash is of another fileset: whole seconds, no xattrs.
    assert pack_dir(dest, None, filters=KEEP, packtype=TAR_STRICT) != result.strict_id
