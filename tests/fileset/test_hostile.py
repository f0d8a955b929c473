"""Hostile archives: each must fail with the right category, naming the member,
leaving nothing outside the target and no partial target behind; and ``scan``
must refuse each one unpack refuses losslessly, the same way (no ID for an
archive nothing can unpack)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import SafeWriter
from repeatr.fileset.limits import Limits
from repeatr.fileset.scan import scan_stream
from repeatr.fileset.unpack import TMP_PREFIX, unpack_stream
from repeatr.linux.rmtree import remove_tree
from repeatr.model.filters import UNPACK_LOSSLESS, UNPACK_LOWPRIV, Filters
from repeatr.model.wareid import WareID
from tests.fileset import hostile as h

SECRET = b"do not touch\n"


@dataclass
class Scene:
    """``work/`` holds the destination; ``outside/`` is a sentinel next to it."""

    work: Path
    outside: Path

    @property
    def dest(self) -> Path:
        return self.work / "dest"

    def unpack(
        self,
        data: bytes,
        *,
        filters: Filters = UNPACK_LOSSLESS,
        expected: WareID | None = None,
        limits: Limits | None = None,
    ) -> FilesetError:
        with pytest.raises(FilesetError) as info:
            unpack_stream(
                io.BytesIO(data),
                self.dest,
                expected=expected,
                filters=filters,
                limits=limits or Limits(),
            )
        return info.value

    def assert_untouched(self) -> None:
        assert not os.path.lexists(self.dest)
        assert os.listdir(self.work) == [], "debris beside the target"
        assert sorted(os.listdir(self.outside)) == ["keep"]
        assert (self.outside / "keep").read_bytes() == SECRET


@pytest.fixture
def scene(tmp_path: Path) -> Scene:
    work = tmp_path / "work"
    outside = tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (outside / "keep").write_bytes(SECRET)
    return Scene(work, outside)


def _scan_refuses(data: bytes, category: Category, member: str | None, **kw: object) -> None:
    """What unpack refuses losslessly, scan refuses too: same category, same member named."""
    if kw.get("filters", UNPACK_LOSSLESS) is not UNPACK_LOSSLESS or "expected" in kw:
        return  # a filter's or a hash's verdict: scan applies neither
    limits = kw.get("limits") or Limits()
    assert isinstance(limits, Limits)
    with pytest.raises(FilesetError) as info:
        scan_stream(io.BytesIO(data), limits=limits)
    assert info.value.category is category, info.value
    if member is not None:
        assert member in str(info.value)


def _fails(scene: Scene, data: bytes, member: str, category: Category, **kw: object) -> str:
    err = scene.unpack(data, **kw)  # type: ignore[arg-type]
    assert err.category is category, err
    assert member in str(err)
    scene.assert_untouched()
    _scan_refuses(data, category, member, **kw)
    return str(err)


# --- names that escape -------------------------------------------------------


def test_absolute_name(scene: Scene) -> None:
    evil = f"{scene.outside}/evil"
    data = h.build([h.file("ok", b"x"), h.file(evil, b"pwned")])
    _fails(scene, data, evil, Category.WARE_CORRUPT)


def test_absolute_etc(scene: Scene) -> None:
    data = h.build([h.file("/etc/x", b"pwned")])
    _fails(scene, data, "/etc/x", Category.WARE_CORRUPT)
    assert not os.path.lexists("/etc/x")


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "../outside/evil"])
def test_dotdot_escape(scene: Scene, name: str) -> None:
    data = h.build([h.directory("a"), h.file(name, b"pwned")])
    _fails(scene, data, name, Category.WARE_CORRUPT)


def test_writer_rejects_escapes_itself(tmp_path: Path) -> None:
    """Defence in depth: the writer doesn't trust the reader to have cleaned names."""
    root = tmp_path / "root"
    root.mkdir()
    for name in ("/abs", "../up", "a/../../up"):
        with SafeWriter(root, limits=Limits()) as w, pytest.raises(FilesetError) as info:
            w.write(Entry(name, EntryType.FILE, 0o644), [b"x"])
        assert info.value.category is Category.WARE_CORRUPT
        assert name in str(info.value)
    assert os.listdir(root) == []
    assert sorted(os.listdir(tmp_path)) == ["root"]


# --- symlinks in the path ----------------------------------------------------


def test_write_through_archive_symlink(scene: Scene) -> None:
    data = h.build([h.symlink("link", str(scene.outside)), h.file("link/evil", b"pwned")])
    _fails(scene, data, "link/evil", Category.WARE_CORRUPT)


def test_write_through_symlink_to_parent(scene: Scene) -> None:
    data = h.build([h.symlink("up", ".."), h.file("up/escape", b"pwned")])
    _fails(scene, data, "up/escape", Category.WARE_CORRUPT)


def test_dir_through_symlink(scene: Scene) -> None:
    data = h.build([h.symlink("link", str(scene.outside)), h.directory("link/sub")])
    _fails(scene, data, "link/sub", Category.WARE_CORRUPT)


def test_preexisting_symlink_in_parent_chain(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a").mkdir()
    (root / "a" / "sub").symlink_to(outside)
    with SafeWriter(root, limits=Limits()) as w, pytest.raises(FilesetError) as info:
        w.write(Entry("a/sub/deeper/evil", EntryType.FILE, 0o644), [b"pwned"])
    assert info.value.category is Category.WARE_CORRUPT
    assert "a/sub/deeper/evil" in str(info.value)
    assert os.listdir(outside) == []


def test_preexisting_symlink_as_leaf_is_not_written_through(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "keep").write_bytes(SECRET)
    (root / "x").symlink_to(outside / "keep")
    with SafeWriter(root, limits=Limits()) as w, pytest.raises(FilesetError) as info:
        w.write(Entry("x", EntryType.FILE, 0o644), [b"pwned"])
    assert info.value.category is Category.WARE_CORRUPT
    assert (outside / "keep").read_bytes() == SECRET


# --- entry types -------------------------------------------------------------


def test_hardlink_rejected(scene: Scene) -> None:
    data = h.build([h.file("a", b"content"), h.hardlink("b", "a")])
    message = _fails(scene, data, "b", Category.WARE_CORRUPT)
    assert "hardlink" in message


def test_char_device_rejected_by_lowpriv(scene: Scene) -> None:
    data = h.build([h.chardev("null", 1, 3)])
    _fails(scene, data, "null", Category.FILTER_REJECTION, filters=UNPACK_LOWPRIV)


def test_setuid_rejected(scene: Scene) -> None:
    data = h.build([h.file("su", b"#!", mode=0o4755)])
    _fails(scene, data, "su", Category.FILTER_REJECTION, filters=Filters(setid="reject"))


# --- duplicates that change type ---------------------------------------------


def test_file_then_dir(scene: Scene) -> None:
    data = h.build([h.file("x", b"1"), h.directory("x")])
    _fails(scene, data, "x", Category.WARE_CORRUPT)


def test_dir_then_symlink(scene: Scene) -> None:
    data = h.build([h.directory("x"), h.file("x/f", b"1"), h.symlink("x", str(scene.outside))])
    _fails(scene, data, "x", Category.WARE_CORRUPT)


def test_file_then_child_of_file(scene: Scene) -> None:
    data = h.build([h.file("x", b"1"), h.file("x/y", b"2")])
    _fails(scene, data, "x/y", Category.WARE_CORRUPT)


# --- limits ------------------------------------------------------------------


def test_limit_total_bytes(scene: Scene) -> None:
    data = h.build([h.file("a", b"12345"), h.file("big", b"x" * 11)])
    message = _fails(scene, data, "big", Category.WARE_CORRUPT, limits=Limits(max_bytes=10))
    assert "size" in message and "10" in message


def test_limit_entry_count(scene: Scene) -> None:
    data = h.build([h.file("a"), h.file("b"), h.file("c")])
    message = _fails(scene, data, "c", Category.WARE_CORRUPT, limits=Limits(max_entries=2))
    assert "entry count" in message


def test_limit_name_length(scene: Scene) -> None:
    long = "n" * 40
    data = h.build([h.file("short"), h.file(long)])
    message = _fails(scene, data, long, Category.WARE_CORRUPT, limits=Limits(max_name_length=32))
    assert "name length" in message and "32" in message


def test_limit_depth(scene: Scene) -> None:
    deep = "a/b/c/d"
    data = h.build([h.file("a/b/ok"), h.file(deep)])
    message = _fails(scene, data, deep, Category.WARE_CORRUPT, limits=Limits(max_depth=3))
    assert "depth" in message and "3" in message


def test_limit_bytes_enforced_by_writer_without_declared_size(tmp_path: Path) -> None:
    """A caller that declares no size still can't write past the limit."""
    root = tmp_path / "root"
    root.mkdir()
    with SafeWriter(root, limits=Limits(max_bytes=4)) as w, pytest.raises(FilesetError) as info:
        w.write(Entry("f", EntryType.FILE, 0o644), [b"12345"])
    assert info.value.category is Category.WARE_CORRUPT
    assert "'f'" in str(info.value)


# --- broken streams ----------------------------------------------------------


def test_truncated_archive(scene: Scene) -> None:
    data = h.build([h.file("a", os.urandom(100_000)), h.file("b", b"tail")], gz=False)
    cut = data[: len(data) // 2]
    err = scene.unpack(cut)
    assert err.category is Category.WARE_CORRUPT
    scene.assert_untouched()
    _scan_refuses(cut, Category.WARE_CORRUPT, None)


def test_truncated_gzip(scene: Scene) -> None:
    data = h.build([h.file("a", os.urandom(100_000))])
    err = scene.unpack(data[: len(data) // 2])
    assert err.category is Category.WARE_CORRUPT
    scene.assert_untouched()
    _scan_refuses(data[: len(data) // 2], Category.WARE_CORRUPT, None)


def test_not_a_tar(scene: Scene) -> None:
    junk = b"<html><body>502 Bad Gateway</body></html>\n" * 50
    err = scene.unpack(junk)
    assert err.category is Category.WARE_CORRUPT
    scene.assert_untouched()
    _scan_refuses(junk, Category.WARE_CORRUPT, None)


def test_hash_mismatch(scene: Scene) -> None:
    data = h.build([h.file("a", b"content")])
    other = WareID.parse("tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ")
    err = scene.unpack(data, expected=other)
    assert err.category is Category.HASH_MISMATCH
    assert err.exit_code == 7
    assert str(other) in str(err)
    assert "tar:" in str(err).replace(str(other), "")  # names the actual ID too
    scene.assert_untouched()


def test_a_failed_unpack_of_a_ware_nested_3000_levels_leaves_nothing(scene: Scene) -> None:
    """The cleanup of a failed unpack removes what it made however deep: shutil.rmtree
    raised RecursionError on it, which hid the hash mismatch and left the tree."""
    data = h.build(h.nested(3000))
    other = WareID.parse("tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ")
    try:
        err = scene.unpack(data, expected=other, limits=h.deep_limits(3000))
        assert err.category is Category.HASH_MISMATCH
        scene.assert_untouched()
    finally:
        # Never leave a deep tree to pytest: its cleanup of old base temp dirs recurses.
        for entry in os.listdir(scene.work):
            remove_tree(scene.work / entry)


class _Interrupting(io.RawIOBase):
    """A real stream that delivers some bytes, then Ctrl-C arrives."""

    def __init__(self, data: bytes, after: int) -> None:
        self._data = io.BytesIO(data)
        self._after = after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._data.tell() >= self._after:
            raise KeyboardInterrupt
        n = self._data.readinto(buffer)
        return n


def test_interrupt_removes_temp(scene: Scene) -> None:
    data = h.build([h.directory("d", mode=0o555), h.file("d/a", os.urandom(3 << 20))], gz=False)
    with pytest.raises(KeyboardInterrupt):
        unpack_stream(
            _Interrupting(data, 1 << 20),  # type: ignore[arg-type]
            scene.dest,
            expected=None,
            filters=UNPACK_LOSSLESS,
        )
    scene.assert_untouched()


def test_dest_must_not_exist(scene: Scene) -> None:
    scene.dest.mkdir()
    with pytest.raises(FilesetError) as info:
        unpack_stream(
            io.BytesIO(h.build([h.file("a")])),
            scene.dest,
            expected=None,
            filters=UNPACK_LOSSLESS,
        )
    assert info.value.category is Category.INOPERABLE_PATH
    assert os.listdir(scene.dest) == []
    assert [n for n in os.listdir(scene.work) if n.startswith(TMP_PREFIX)] == []
