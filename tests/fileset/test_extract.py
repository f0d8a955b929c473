"""SafeWriter on its own: the fd cache, deep trees, and the syscall shortcuts."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import SafeWriter
from repeatr.fileset.limits import Limits


def _file(name: str, data: bytes = b"", *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(name, EntryType.FILE, mode, uid, gid, 1_500_000_000, 7, size=len(data))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def my_ids() -> tuple[int, int]:
    return os.geteuid(), os.getegid()


def test_many_dirs_in_random_order(root: Path, my_ids: tuple[int, int]) -> None:
    """More directories than the fd cache holds, visited out of order: evictions
    must never lose or misplace an entry, and fds must not leak."""
    uid, gid = my_ids
    names = [f"d{i % 37}/e{i % 11}/f{i}" for i in range(1500)]
    random.Random(7).shuffle(names)
    before = len(os.listdir("/proc/self/fd"))
    with SafeWriter(root, limits=Limits()) as w:
        for name in names:
            w.write(_file(name, name.encode(), uid=uid, gid=gid), [name.encode()])
        w.finish()
    assert len(os.listdir("/proc/self/fd")) == before
    for name in names:
        assert (root / name).read_bytes() == name.encode()


def test_deep_tree(root: Path, my_ids: tuple[int, int]) -> None:
    deep = "/".join(f"l{i}" for i in range(200))
    with SafeWriter(root, limits=Limits()) as w:
        w.write(_file(f"{deep}/leaf", b"x", uid=my_ids[0], gid=my_ids[1]), [b"x"])
        w.finish()
    assert (root / deep / "leaf").read_bytes() == b"x"
    assert stat.S_IMODE(os.lstat(root / deep).st_mode) == 0o755


def test_depth_limit_before_anything_is_made(root: Path) -> None:
    with SafeWriter(root, limits=Limits(max_depth=4)) as w, pytest.raises(FilesetError) as info:
        w.write(_file("a/b/c/d/e"), [b""])
    assert info.value.category is Category.WARE_CORRUPT
    assert os.listdir(root) == []


def test_mode_survives_a_strict_umask(root: Path, my_ids: tuple[int, int]) -> None:
    old = os.umask(0o077)
    try:
        with SafeWriter(root, limits=Limits()) as w:
            w.write(_file("f", b"1", mode=0o644, uid=my_ids[0], gid=my_ids[1]), [b"1"])
            w.write(_file("g", b"1", mode=0o600, uid=my_ids[0], gid=my_ids[1]), [b"1"])
            w.finish()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.lstat(root / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(root / "g").st_mode) == 0o600


@pytest.mark.root
def test_owner_shortcut_respects_setgid_root(root: Path) -> None:
    """New files in a setgid dir inherit its group: fchown can't be skipped."""
    os.chown(root, 0, 4321)
    os.chmod(root, 0o2775)
    with SafeWriter(root, limits=Limits()) as w:
        w.write(_file("f", b"1", uid=0, gid=0), [b"1"])
        w.write(Entry("d", EntryType.DIR, 0o755, 0, 0, 1_500_000_000))
        w.write(_file("d/g", b"1", uid=0, gid=0), [b"1"])
        w.write(Entry(".", EntryType.DIR, 0o755, 0, 0, 1_500_000_000))
        w.finish()
    for rel in ("f", "d", "d/g", "."):
        st = os.lstat(root / rel)
        assert (st.st_uid, st.st_gid) == (0, 0), rel


@pytest.mark.root
def test_xattrs_on_dirs_and_symlinks(root: Path) -> None:
    with SafeWriter(root, limits=Limits()) as w:
        w.write(
            Entry("d", EntryType.DIR, 0o555, 0, 0, 1_500_000_000, xattrs={"user.k": b"dir"})
        )
        w.write(
            Entry(
                "l",
                EntryType.SYMLINK,
                0o777,
                0,
                0,
                1_500_000_000,
                linkname="/nowhere",
                xattrs={"trusted.k": b"link"},
            )
        )
        w.finish()
    assert os.getxattr(root / "d", "user.k") == b"dir"
    assert os.getxattr(root / "l", "trusted.k", follow_symlinks=False) == b"link"


def test_unsettable_xattr_names_member(root: Path) -> None:
    """user.* xattrs are not allowed on fifos: a clear error, not a crash."""
    with SafeWriter(root, limits=Limits()) as w, pytest.raises(FilesetError) as info:
        w.write(Entry("p", EntryType.FIFO, 0o644, xattrs={"user.k": b"v"}))
    assert "'p'" in str(info.value)
    assert info.value.category is Category.INOPERABLE_PATH


def test_root_entry_metadata(root: Path, my_ids: tuple[int, int]) -> None:
    uid, gid = my_ids
    with SafeWriter(root, limits=Limits()) as w:
        w.write(Entry(".", EntryType.DIR, 0o751, uid, gid, 1_400_000_000, 42))
        w.write(_file("f", uid=uid, gid=gid), [])
        w.finish()
    st = os.lstat(root)
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert st.st_mtime_ns == 1_400_000_000_000_000_042


def test_root_must_be_a_dir(root: Path) -> None:
    with SafeWriter(root, limits=Limits()) as w, pytest.raises(FilesetError) as info:
        w.write(_file("."), [])
    assert info.value.category is Category.WARE_CORRUPT


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_file_in_many_blocks(root: Path, my_ids: tuple[int, int]) -> None:
    data = os.urandom(3 << 20)
    with SafeWriter(root, limits=Limits()) as w:
        w.write(_file("big", data, uid=my_ids[0], gid=my_ids[1]), _chunks(data, 100_000))
        w.finish()
    assert (root / "big").read_bytes() == data
    assert os.lstat(root / "big").st_mtime_ns == 1_500_000_000_000_000_007
