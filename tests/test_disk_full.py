"""Every write path on a real full filesystem: DISK_FULL naming the path, nothing partial left.

Each test mounts a small tmpfs, fills it to the last page with a real file
(written until the kernel says ENOSPC), then asks one write path to write
there: a shelf record, a memo entry, an unpack, a save to a ``ca+file``
and a ``file`` warehouse. The whole-run cases (a run whose job fills the
state disk and exits 0, the cache, the warehouse) are in
``tests/stress/test_disk_full.py``.
"""

from __future__ import annotations

import errno
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.cache import record
from repeatr.cache.record import ShelfRecord
from repeatr.errors import Category, DiskFull, RepeatrError
from repeatr.fileset.pack import pack_dir
from repeatr.fileset.unpack import unpack_stream
from repeatr.linux import libc
from repeatr.memo import MemoStore
from repeatr.model.filters import UNPACK_LOSSLESS, Filters
from repeatr.warehouse import warehouse_for

pytestmark = pytest.mark.root


def fill(directory: Path) -> None:
    """Write one file in ``directory`` until its filesystem has no byte left."""
    block = b"\xa5" * (1 << 16)
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    for size in (4096, 512, 1):  # the last partial pages
        with open(directory / "filler", "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\xa5" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.fixture
def full() -> Iterator[Path]:
    """A 1 MiB tmpfs with a ``room`` dir in it, filled to the last byte."""
    base = Path(tempfile.mkdtemp(prefix="repeatr-full-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=1m,mode=700")
    try:
        (base / "room").mkdir()
        fill(base)
        yield base / "room"
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def _everything(path: Path) -> list[str]:
    return sorted(os.fspath(p.relative_to(path)) for p in path.rglob("*"))


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(os.urandom(200_000))
    (src / "small").write_text("hello\n")
    return src


def test_shelf_record_on_a_full_disk(full: Path) -> None:
    made = ShelfRecord(ware="tar:x", strict="tar-strict:y", size=1, entries=1, created=0.0)
    with pytest.raises(DiskFull) as info:
        record.write(full / "w.json", made)
    assert info.value.category is Category.DISK_FULL
    assert str(full / "w.json") in info.value.message
    assert isinstance(info.value.__cause__, OSError)
    assert _everything(full) == []  # no record, no temp file


def test_memo_entry_on_a_full_disk(full: Path) -> None:
    """put raises the OSError (a run turns it into a warning) and leaves nothing."""
    memo = MemoStore(full)
    os.makedirs(os.path.join(memo.dir, "ab"))
    with pytest.raises(OSError) as info:
        memo.put("ab" + "0" * 62, b'{"record": 1}\n' * 1000)
    assert info.value.errno == errno.ENOSPC
    assert _everything(full) == ["memo", "memo/ab"]  # no entry, no .tmp- file
    assert memo.get("ab" + "0" * 62) is None


def test_unpack_into_a_full_disk(full: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    ware = pack_dir(_tree(tmp_path), buf, filters=Filters())
    buf.seek(0)
    with pytest.raises(DiskFull) as info:
        unpack_stream(buf, full / "out", expected=ware, filters=UNPACK_LOSSLESS)
    assert info.value.category is Category.DISK_FULL
    assert str(full) in info.value.message
    assert _everything(full) == []  # no half tree, no .repeatr-tmp- dir


@pytest.mark.parametrize("scheme", ["ca+file", "file"])
def test_save_to_a_full_warehouse(full: Path, tmp_path: Path, scheme: str) -> None:
    url = f"ca+file://{full}/" if scheme == "ca+file" else f"file://{full}/ware.tgz"
    with pytest.raises(RepeatrError) as info, warehouse_for(url).start_save() as session:
        session.commit(pack_dir(_tree(tmp_path), session.file, filters=Filters()))
    assert info.value.category is Category.DISK_FULL
    assert str(full) in info.value.message
    assert _everything(full) == []  # no half ware, no temp file


def test_the_default_ware_disk_limit_is_a_share_of_free_space(tmp_path: Path) -> None:
    """A ware that would write 20 MB into a cache with 32 MB free: more than the default
    50%, so it stops before the disk is full, naming the ware, the limit and the cache."""
    from repeatr.cache import Cache
    from repeatr.fileset.pack import scan_stream

    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}").write_bytes(os.urandom(5 << 20))
    archive = tmp_path / "w.tgz"
    with open(archive, "wb") as f:
        ware = pack_dir(src, f, filters=Filters())
    with open(archive, "rb") as f:
        assert scan_stream(f) == ware
    base = Path(tempfile.mkdtemp(prefix="repeatr-share-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=32m,mode=700")
    try:
        cache = Cache(base / "state", lock_timeout=5)
        with pytest.raises(DiskFull) as info, cache.shelf(ware, [f"file://{archive}"]):
            pass
        message = info.value.message
        assert str(ware) in message and "50% of the" in message and str(base) in message
        assert info.value.__cause__ is not None and info.value.__cause__.__cause__ is None
        assert [str(w) for w, _ in cache.layout.iter_shelves()] == []
        assert cache.layout.list_temps() == []  # no half shelf
        # Named explicitly, a larger limit lets it in.
        roomy = Cache(base / "state", lock_timeout=5, ware_disk="none")
        with roomy.shelf(ware, [f"file://{archive}"]) as held:
            assert held.unpacked
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


@pytest.fixture
def full_ext4() -> Iterator[Path]:
    """An 8 MiB ext4 (loop device) filled to the last block: unlike tmpfs, a new
    directory or file there needs a block too."""
    from repeatr.linux import scratch

    base = Path(tempfile.mkdtemp(prefix="repeatr-ext4-"))
    scratch.make_image(os.fspath(base / "img"), 8 << 20)
    (base / "mnt").mkdir()
    scratch.mount_image(os.fspath(base / "img"), os.fspath(base / "mnt"))
    try:
        fill(base / "mnt")
        yield base / "mnt"
    finally:
        libc.umount2(base / "mnt", libc.MNT_DETACH)  # the loop device detaches with it
        (base / "img").unlink()
        (base / "mnt").rmdir()
        base.rmdir()


def test_cache_bookkeeping_on_a_full_disk(full_ext4: Path, tmp_path: Path) -> None:
    """Before: a raw ENOSPC from mkdir, an internal error (exit 2)."""
    from repeatr.cache import Cache

    archive = tmp_path / "w.tgz"
    with open(archive, "wb") as f:
        ware = pack_dir(_tree(tmp_path), f, filters=Filters())
    with pytest.raises(DiskFull) as info, Cache(full_ext4 / "state").shelf(ware, [f"file://{archive}"]):
        pass
    assert str(full_ext4 / "state") in info.value.message
    assert isinstance(info.value.__cause__, OSError)


def test_pack_into_a_file_on_a_full_disk(full: Path, tmp_path: Path) -> None:
    """An output that is no warehouse's temp file (an HTTP save's spool is one): the pack's
    own write names it; before, a PACK_INVALID blaming the tree being packed."""
    with open(full / "out.tgz", "wb", buffering=0) as out, pytest.raises(DiskFull) as info:
        pack_dir(_tree(tmp_path), out, filters=Filters())
    assert str(full / "out.tgz") in info.value.message


def test_cli_unpack_over_the_ware_disk_limit(tmp_path: Path) -> None:
    """--ware-disk-limit reaches `repeatr unpack`; the error names the ware's member and the limit."""
    from tests.clirun import StateRunner

    archive = tmp_path / "w.tgz"
    with open(archive, "wb") as f:
        ware = pack_dir(_tree(tmp_path), f, filters=Filters())
    cli = StateRunner(tmp_path / "state", tmp_path)
    dest = tmp_path / "dest"
    res = cli.run("unpack", str(ware), str(dest), "--source", f"file://{archive}",
                  "--ware-disk-limit", "100K")
    assert res.code == Category.DISK_FULL, res.stderr
    assert "'data'" in res.stderr and "100K" in res.stderr
    assert not dest.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    ok = cli.run("unpack", str(ware), str(dest), "--source", f"file://{archive}",
                 "--ware-disk-limit", "none")
    assert ok.code == 0, ok.stderr
