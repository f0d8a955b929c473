"""Unpacking real archives: what lands on disk, and the IDs reported."""

from __future__ import annotations

import io
import os
import stat
import subprocess
from pathlib import Path

import pytest

from repeatr.fileset.pack import pack_dir
from repeatr.fileset.unpack import TMP_PREFIX, UnpackResult, unpack_stream
from repeatr.model.filters import UNPACK_LOSSLESS, UNPACK_LOWPRIV, Filters
from repeatr.model.wareid import TAR, TAR_STRICT, WareID
from tests.fileset import hostile as h
from tests.rio import FIXTURES as RIO
from tests.rio import SANS_BASE, WITH_BASE


def _unpack(
    data: bytes, dest: Path, filters: Filters = UNPACK_LOSSLESS, expected: WareID | None = None
) -> UnpackResult:
    return unpack_stream(io.BytesIO(data), dest, expected=expected, filters=filters)


def _mtime_ns(path: Path) -> int:
    return os.lstat(path).st_mtime_ns


def test_nested_tree(tmp_path: Path) -> None:
    data = h.build(
        [
            h.directory("./"),
            h.directory("a"),
            h.directory("a/b"),
            h.file("a/b/c.txt", b"hello"),
            h.file("top", b"x" * 70_000, mode=0o600),
            h.file("implied/parent/f", b"deep"),  # parents not in the archive
        ]
    )
    dest = tmp_path / "dest"
    result = _unpack(data, dest)
    assert (dest / "a/b/c.txt").read_bytes() == b"hello"
    assert (dest / "top").read_bytes() == b"x" * 70_000
    assert stat.S_IMODE(os.lstat(dest / "top").st_mode) == 0o600
    assert (dest / "implied/parent/f").read_bytes() == b"deep"
    implied = os.lstat(dest / "implied")
    assert stat.S_IMODE(implied.st_mode) == 0o755
    assert implied.st_mtime == 1262304000
    assert result.entries == 6
    assert result.bytes == 5 + 70_000 + 4
    assert result.ware_id == result.filtered_id  # lossless: nothing changed
    assert [n for n in os.listdir(tmp_path) if n.startswith(TMP_PREFIX)] == []


def test_read_only_dirs(tmp_path: Path) -> None:
    data = h.build(
        [
            h.directory("ro", mode=0o555),
            h.directory("ro/none", mode=0o000),
            h.file("ro/none/f", b"1", mode=0o444),
            h.file("ro/g", b"2"),
        ]
    )
    dest = tmp_path / "dest"
    _unpack(data, dest)
    assert stat.S_IMODE(os.lstat(dest / "ro").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(dest / "ro/none").st_mode) == 0o000
    assert (dest / "ro/g").read_bytes() == b"2"
    assert _mtime_ns(dest / "ro") == h.MTIME * 10**9  # not disturbed by its children


def test_symlinks_stored_verbatim(tmp_path: Path) -> None:
    data = h.build(
        [
            h.symlink("dangling", "does/not/exist"),
            h.symlink("absolute", "/etc/passwd"),
            h.symlink("climbing", "../../../../outside"),
            h.file("f", b"1"),
            h.symlink("rel", "f"),
        ]
    )
    dest = tmp_path / "dest"
    result = _unpack(data, dest)
    assert os.readlink(dest / "dangling") == "does/not/exist"
    assert os.readlink(dest / "absolute") == "/etc/passwd"
    assert os.readlink(dest / "climbing") == "../../../../outside"
    assert os.readlink(dest / "rel") == "f"
    assert _mtime_ns(dest / "absolute") == h.MTIME * 10**9
    # The original's hash skips symlinks; the strict one covers them.
    assert result.strict_id.packtype == TAR_STRICT
    without = _unpack(h.build([h.file("f", b"1")]), tmp_path / "plain")
    assert without.ware_id == result.ware_id
    assert without.strict_id != result.strict_id


def test_fifo(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _unpack(h.build([h.fifo("p", mode=0o640)]), dest)
    st = os.lstat(dest / "p")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640


def test_mtime_nanoseconds(tmp_path: Path) -> None:
    data = h.build(
        [h.directory("d"), h.file("d/f", b"1")],
        pax_headers={
            "d/f": {"mtime": "1500000000.123456789"},
            "d": {"mtime": "1400000000.000000001"},
        },
    )
    dest = tmp_path / "dest"
    _unpack(data, dest)
    assert _mtime_ns(dest / "d/f") == 1500000000_123456789
    assert _mtime_ns(dest / "d") == 1400000000_000000001


def test_xattrs(tmp_path: Path) -> None:
    data = h.build(
        [h.file("f", b"1", mode=0o444)],
        pax_headers={"f": {"SCHILY.xattr.user.origin": "archive"}},
    )
    dest = tmp_path / "dest"
    _unpack(data, dest)
    assert os.getxattr(dest / "f", "user.origin") == b"archive"


@pytest.mark.root
def test_ownership_kept_by_lossless(tmp_path: Path) -> None:
    data = h.build(
        [
            h.directory("./", uid=1000, gid=1000),
            h.directory("d", uid=1000, gid=1001),
            h.file("d/f", b"1", uid=1000, gid=1000),
            h.symlink("l", "d/f", uid=1002, gid=1003),
        ]
    )
    dest = tmp_path / "dest"
    _unpack(data, dest)
    for rel, ids in [(".", (1000, 1000)), ("d", (1000, 1001)), ("d/f", (1000, 1000))]:
        st = os.lstat(dest / rel)
        assert (st.st_uid, st.st_gid) == ids, rel
    st = os.lstat(dest / "l")
    assert (st.st_uid, st.st_gid) == (1002, 1003)


@pytest.mark.root
def test_uid_mine(tmp_path: Path) -> None:
    data = h.build([h.directory("d", uid=1000, gid=1000), h.file("d/f", b"1", uid=1000, gid=1000)])
    dest = tmp_path / "dest"
    result = _unpack(data, dest, filters=UNPACK_LOWPRIV)
    for rel in (".", "d", "d/f"):
        st = os.lstat(dest / rel)
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), rel
    assert result.filtered_id != result.ware_id


@pytest.mark.root
def test_char_device_lossless_as_root(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    _unpack(h.build([h.chardev("null", 1, 3, mode=0o666)]), dest)
    st = os.lstat(dest / "null")
    assert stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666


def test_char_device_dropped_by_ignore(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = _unpack(h.build([h.file("a"), h.chardev("null")]), dest, Filters(dev="ignore"))
    assert os.listdir(dest) == ["a"]
    assert result.entries == 2


@pytest.mark.parametrize(("setid", "mode"), [("ignore", 0o755), ("keep", 0o4755)])
def test_setuid_filter(tmp_path: Path, setid: str, mode: int) -> None:
    dest = tmp_path / "dest"
    data = h.build([h.file("su", b"#!", mode=0o4755, uid=os.getuid(), gid=os.getgid())])
    _unpack(data, dest, Filters(setid=setid))  # type: ignore[arg-type]
    assert stat.S_IMODE(os.lstat(dest / "su").st_mode) == mode


@pytest.mark.root
def test_setgid_dir_kept_after_chown(tmp_path: Path) -> None:
    """chown clears setid bits: the mode must be applied after it."""
    dest = tmp_path / "dest"
    _unpack(h.build([h.directory("g", mode=0o2775, uid=1000, gid=1000)]), dest)
    assert stat.S_IMODE(os.lstat(dest / "g").st_mode) == 0o2775


def test_same_type_duplicate_replaces(tmp_path: Path) -> None:
    data = h.build(
        [
            h.file("f", b"first"),
            h.directory("d", mode=0o700),
            h.file("f", b"second", mode=0o640),
            h.directory("d", mode=0o750),
            h.symlink("l", "one"),
            h.symlink("l", "two"),
        ]
    )
    dest = tmp_path / "dest"
    _unpack(data, dest)
    assert (dest / "f").read_bytes() == b"second"
    assert stat.S_IMODE(os.lstat(dest / "f").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(dest / "d").st_mode) == 0o750
    assert os.readlink(dest / "l") == "two"


def test_progress_reported(tmp_path: Path) -> None:
    seen: list[int] = []
    data = h.build([h.file(f"f{i}", b"x" * (1 << 20)) for i in range(10)])
    unpack_stream(
        io.BytesIO(data),
        tmp_path / "dest",
        expected=None,
        filters=UNPACK_LOSSLESS,
        progress=seen.append,
    )
    assert seen and seen[-1] == 10 << 20
    assert seen == sorted(seen)


def test_gnu_tar_archive(tmp_path: Path) -> None:
    """An archive written by GNU tar (not by us) unpacks to the same tree."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"gnu")
    os.symlink("sub/f", src / "link")
    archive = tmp_path / "a.tar.gz"
    subprocess.run(
        ["tar", "-czf", os.fspath(archive), "-C", os.fspath(src), "--format=gnu", "."],
        check=True,
    )
    dest = tmp_path / "dest"
    with archive.open("rb") as stream:
        unpack_stream(stream, dest, expected=None, filters=UNPACK_LOSSLESS)
    assert (dest / "sub" / "f").read_bytes() == b"gnu"
    assert os.readlink(dest / "link") == "sub/f"


# --- the rio fixtures: published IDs, unpack then pack back ------------------


@pytest.mark.parametrize(
    ("fixture", "ware"), [("tar_withBase.tgz", WITH_BASE), ("tar_sansBase.tgz", SANS_BASE)]
)
def test_rio_fixture_round_trip(tmp_path: Path, fixture: str, ware: str) -> None:
    expected = WareID.parse(ware)
    dest = tmp_path / "dest"
    with (RIO / fixture).open("rb") as stream:
        result = unpack_stream(stream, dest, expected=expected, filters=UNPACK_LOSSLESS)
    assert result.ware_id == expected
    assert result.filtered_id == expected
    assert pack_dir(dest, None, filters=Filters()) == expected


@pytest.mark.root
def test_filtered_id_describes_disk(tmp_path: Path) -> None:
    """With filters, the reported post-filter ID is what packing the result gives,
    implied directories (no "./" in sans-base) included."""
    dest = tmp_path / "dest"
    filters = Filters(uid=1234, gid=1234, mtime=1300000000)
    with (RIO / "tar_sansBase.tgz").open("rb") as stream:
        result = unpack_stream(stream, dest, expected=WareID.parse(SANS_BASE), filters=filters)
    assert os.lstat(dest).st_uid == 1234
    assert result.filtered_id != result.ware_id
    assert pack_dir(dest, None, filters=Filters()) == result.filtered_id
    assert pack_dir(dest, None, filters=Filters(), packtype=TAR_STRICT) == result.strict_id


def test_strict_expected(tmp_path: Path) -> None:
    data = h.build([h.file("f", b"1"), h.symlink("l", "f")])
    first = _unpack(data, tmp_path / "one")
    again = _unpack(data, tmp_path / "two", expected=first.strict_id)
    assert again.ware_id == first.strict_id
    assert again.ware_id.packtype == TAR_STRICT
    assert first.ware_id.packtype == TAR


def test_root_entry_applies_to_dest(tmp_path: Path) -> None:
    """The archive's "./" sets dest's own mode and mtime, read-only included,
    and the final rename doesn't disturb them."""
    data = h.build([h.directory("./", mode=0o555, mtime=1_234_567_890), h.file("f", b"1")])
    dest = tmp_path / "dest"
    _unpack(data, dest)
    st = os.lstat(dest)
    assert stat.S_IMODE(st.st_mode) == 0o555
    assert st.st_mtime_ns == 1_234_567_890 * 10**9
    assert (dest / "f").read_bytes() == b"1"


@pytest.mark.root
def test_rio_kitchen_sink_round_trip(tmp_path: Path) -> None:
    """Owners 7000 and 4000:5000, dangling and dir symlinks, an empty dir: all
    land as archived, and packing the result gives back the same IDs."""
    dest = tmp_path / "dest"
    with (RIO / "tar_kitchenSink.tgz").open("rb") as stream:
        result = unpack_stream(stream, dest, expected=None, filters=UNPACK_LOSSLESS)
    assert os.readlink(dest / "lnkdangle") == "nonexistent"
    assert os.readlink(dest / "lnkdir") == "dir/"
    st = os.lstat(dest / "f2")
    assert (st.st_uid, st.st_gid) == (4000, 5000)
    assert (dest / "empty").is_dir() and os.listdir(dest / "empty") == []
    assert pack_dir(dest, None, filters=Filters()) == result.ware_id
    assert pack_dir(dest, None, filters=Filters(), packtype=TAR_STRICT) == result.strict_id
