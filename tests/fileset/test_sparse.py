"""Holes: zeros are never written, the rule depends on content alone, the ID is unchanged.

- ``SparseWriter``: random content with zero runs at every alignment, cut
  into blocks at random places, reads back byte for byte, and its holes
  (SEEK_DATA/SEEK_HOLE) are exactly the aligned all-zero chunks whatever the
  cut.
- A GNU tar ``--sparse`` member of 1 GiB in a ~200-byte archive, and a plain
  tar of 256 MiB of zeros gzip'd, unpack into a tmpfs using a few KiB; the
  ware ID still verifies and the exact strict ID (the cache's record) equals
  a re-hash of the tree on disk.
- The per-ware disk limit: a ware writing more than ``max_disk`` stops with
  DISK_FULL naming the member and the limit, leaving nothing; the same ware
  as a hole costs nothing against the same limit.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category, DiskFull
from repeatr.fileset.limits import Limits, disk_limit
from repeatr.fileset.pack import hash_dir_exact, scan_stream
from repeatr.fileset.sparse import CHUNK, SparseWriter
from repeatr.fileset.unpack import unpack_stream
from repeatr.linux import libc
from repeatr.model.filters import UNPACK_LOSSLESS
from repeatr.model.wareid import TAR_STRICT


def _data_map(fd: int, size: int) -> list[tuple[int, int]]:
    """The file's data extents, as the kernel reports them."""
    extents = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        extents.append((start, end))
        pos = end
    return extents


def _content(rng: random.Random) -> bytes:
    parts = []
    for _ in range(40):
        kind = rng.choice(("zero-aligned", "zero-odd", "data", "sparse-data"))
        if kind == "zero-aligned":
            parts.append(bytes(CHUNK * rng.randint(1, 5)))
        elif kind == "zero-odd":
            parts.append(bytes(rng.randint(1, 3 * CHUNK)))
        elif kind == "data":
            parts.append(rng.randbytes(rng.randint(1, 2 * CHUNK)))
        else:  # mostly zeros with a byte at each end: not a hole
            n = rng.randint(2, CHUNK)
            parts.append(b"\x01" + bytes(n - 2) + b"\x01")
    return b"".join(parts)


def _expected_data(content: bytes) -> list[tuple[int, int]]:
    """Merged extents of the chunks that are not all zero."""
    extents: list[tuple[int, int]] = []
    for start in range(0, len(content), CHUNK):
        end = min(start + CHUNK, len(content))
        if content[start:end].count(0) == end - start:
            continue
        if extents and extents[-1][1] == start:
            extents[-1] = (extents[-1][0], end)
        else:
            extents.append((start, end))
    return extents


@pytest.fixture
def tmpfs() -> Iterator[Path]:
    """A tmpfs (it reports holes exactly, page by page)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = Path(tempfile.mkdtemp(prefix="repeatr-sparse-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=64m,mode=700")
    try:
        yield base
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


@pytest.mark.root
@pytest.mark.parametrize("seed", range(6))
def test_holes_depend_on_content_not_on_blocks(tmpfs: Path, seed: int) -> None:
    rng = random.Random(seed)
    content = _content(rng)
    maps = []
    for cut in range(3):
        path = tmpfs / f"f{cut}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            writer = SparseWriter(fd)
            pos = 0
            while pos < len(content):  # a different cut each time
                n = rng.randint(1, 3 * CHUNK) if cut else 1 << 20
                writer.write(content[pos : pos + n])
                pos += n
            assert writer.finish() == len(content)
            maps.append(_data_map(fd, len(content)))
        finally:
            os.close(fd)
        assert path.read_bytes() == content
    assert maps[0] == maps[1] == maps[2] == _expected_data(content)


@pytest.mark.root
def test_a_file_of_zeros_ending_in_a_hole(tmpfs: Path) -> None:
    fd = os.open(tmpfs / "z", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer = SparseWriter(fd)
        writer.write(b"x" + bytes(5 * CHUNK + 7))
        assert writer.finish() == 5 * CHUNK + 8
        assert writer.allocated == CHUNK
        assert os.fstat(fd).st_size == 5 * CHUNK + 8
    finally:
        os.close(fd)


def _sparse_tar(tmp: Path, apparent: int) -> bytes:
    """A GNU tar ``--sparse`` archive (gzip'd) of one file: a few bytes, then ``apparent``."""
    src = tmp / "src"
    src.mkdir()
    with open(src / "huge", "wb") as f:
        f.write(b"head")
        f.truncate(apparent)
    archive = tmp / "huge.tgz"
    subprocess.run(
        ["tar", "--sparse", "--format=gnu", "--owner=0", "--group=0", "--mtime=@1600000000",
         "-C", os.fspath(src), "-czf", os.fspath(archive), "."],
        check=True,
    )
    shutil.rmtree(src)
    return archive.read_bytes()


@pytest.mark.root
@pytest.mark.slow
def test_a_sparse_bomb_unpacks_to_holes(tmpfs: Path, tmp_path: Path) -> None:
    """The issue's case: a ~200-byte archive, 1 GiB apparent (the issue's had 3): before,
    all of it on disk (here: ENOSPC on the 64 MiB tmpfs)."""
    data = _sparse_tar(tmp_path, 1 << 30)
    assert len(data) < 1024
    result = unpack_stream(io.BytesIO(data), tmpfs / "out", expected=None, filters=UNPACK_LOSSLESS)
    st = os.stat(tmpfs / "out" / "huge")
    assert st.st_size == 1 << 30
    assert st.st_blocks * 512 <= CHUNK  # one data chunk, the rest holes
    assert result.strict_id == hash_dir_exact(tmpfs / "out", packtype=TAR_STRICT)


@pytest.mark.root
@pytest.mark.slow
def test_long_zero_runs_in_a_plain_tar_unpack_to_holes(tmpfs: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 256 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    data = buf.getvalue()
    assert len(data) < 1 << 20
    ware = scan_stream(io.BytesIO(data))
    result = unpack_stream(io.BytesIO(data), tmpfs / "out", expected=ware, filters=UNPACK_LOSSLESS)
    st = os.stat(tmpfs / "out" / "zeros")
    assert st.st_size == 256 << 20 and st.st_blocks == 0
    assert result.strict_id == hash_dir_exact(tmpfs / "out", packtype=TAR_STRICT)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_a_ware_over_the_disk_limit_stops_naming_it(tmp_path: Path) -> None:
    data = _tar({"a": os.urandom(300_000), "b": os.urandom(300_000)})
    ware = scan_stream(io.BytesIO(data))
    limits = Limits(max_disk=400_000, max_disk_source="--ware-disk-limit")
    with pytest.raises(DiskFull) as info:
        unpack_stream(
            io.BytesIO(data), tmp_path / "out", expected=ware, filters=UNPACK_LOSSLESS,
            limits=limits,
        )
    assert info.value.category is Category.DISK_FULL
    assert "'b'" in info.value.message and "391K" in info.value.message
    assert "--ware-disk-limit" in info.value.message
    assert sorted(os.listdir(tmp_path)) == []  # no half tree
    # Zeros cost nothing against the same limit.
    zeros = _tar({"a": bytes(300_000), "b": bytes(300_000)})
    unpack_stream(
        io.BytesIO(zeros), tmp_path / "z", expected=scan_stream(io.BytesIO(zeros)),
        filters=UNPACK_LOSSLESS, limits=limits,
    )


def test_disk_limit_settings(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    limit, source = disk_limit("50%", tmp_path)
    assert abs(limit - st.f_bavail * st.f_frsize // 2) < 64 << 20
    assert source.startswith("50% of the ") and str(tmp_path) in source
    assert disk_limit("20G", tmp_path) == (20 << 30, "--ware-disk-limit")
    assert disk_limit("none", tmp_path)[0] >= 1 << 62
    for bad in ("0%", "101%", "x%", "lots"):
        with pytest.raises(Exception) as info:
            disk_limit(bad, tmp_path)
        assert getattr(info.value, "category", None) is Category.USAGE
