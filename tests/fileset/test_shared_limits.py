"""Pack, scan and unpack enforce one set of limits: what repeatr packs, it can read back.

Issue 12 point 6: a 300-deep directory packed and saved, then failed the
256 depth limit on unpack. Each limit here is tried on a real tree: pack
refuses it (PACK_INVALID, naming the entry and the limit), and the archive
that a tool without limits makes of it is refused by scan and unpack alike
(WARE_CORRUPT).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.limits import Limits
from repeatr.fileset.pack import pack_dir, scan_stream
from repeatr.fileset.unpack import unpack_stream
from repeatr.model.filters import PACK_FLATTEN, UNPACK_LOSSLESS


def _deep(root: Path, depth: int) -> str:
    """``root/d/d/.../d`` with ``depth`` components below root, and a file at the bottom."""
    rel = "/".join(["d"] * depth)
    (root / rel).mkdir(parents=True)
    (root / rel / "f").write_bytes(b"bottom")
    return rel


def _pack(root: Path, limits: Limits) -> bytes:
    out = io.BytesIO()
    pack_dir(root, out, filters=PACK_FLATTEN, limits=limits)
    return out.getvalue()


def _read_back(data: bytes, dest: Path, limits: Limits) -> None:
    scan_stream(io.BytesIO(data), limits=limits)
    unpack_stream(io.BytesIO(data), dest, expected=None, filters=UNPACK_LOSSLESS, limits=limits)


def test_a_300_deep_tree_is_refused_by_pack_scan_and_unpack(tmp_path: Path) -> None:
    root = tmp_path / "out"
    _deep(root, 300)
    with pytest.raises(FilesetError) as info:
        _pack(root, Limits())
    assert info.value.category is Category.PACK_INVALID
    assert "depth" in str(info.value) and "256" in str(info.value)

    unlimited = _pack(root, Limits.unlimited())  # as another tool would make it
    with pytest.raises(FilesetError) as scanned:
        scan_stream(io.BytesIO(unlimited))
    with pytest.raises(FilesetError) as unpacked:
        unpack_stream(
            io.BytesIO(unlimited), tmp_path / "dest", expected=None, filters=UNPACK_LOSSLESS
        )
    for err in (scanned.value, unpacked.value):
        assert err.category is Category.WARE_CORRUPT
        assert "depth" in str(err) and "256" in str(err)


def test_a_tree_at_the_depth_limit_packs_and_reads_back(tmp_path: Path) -> None:
    root = tmp_path / "out"
    _deep(root, Limits().max_depth - 1)  # the file at the bottom is component 256
    data = _pack(root, Limits())
    _read_back(data, tmp_path / "dest", Limits())


@pytest.mark.parametrize(
    ("limits", "what"),
    [
        (Limits(max_entries=5), "entry count"),
        (Limits(max_name_length=20), "name length"),
        (Limits(max_depth=3), "depth"),
        (Limits(max_bytes=10), "total size"),
    ],
)
def test_every_limit_is_one_definition(tmp_path: Path, limits: Limits, what: str) -> None:
    """Over any limit: pack refuses; scan and unpack refuse the unlimited tool's archive."""
    root = tmp_path / "out"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "a-rather-long-name").write_bytes(b"0123456789ab")
    for i in range(5):
        (root / f"f{i}").write_bytes(b"")
    with pytest.raises(FilesetError) as packed:
        _pack(root, limits)
    assert packed.value.category is Category.PACK_INVALID
    assert what in str(packed.value)

    data = _pack(root, Limits.unlimited())
    with pytest.raises(FilesetError) as scanned:
        scan_stream(io.BytesIO(data), limits=limits)
    with pytest.raises(FilesetError) as unpacked:
        unpack_stream(
            io.BytesIO(data), tmp_path / "d", expected=None, filters=UNPACK_LOSSLESS, limits=limits
        )
    for err in (scanned.value, unpacked.value):
        assert err.category is Category.WARE_CORRUPT and what in str(err)
    assert not os.path.lexists(tmp_path / "d")

    _read_back(data, tmp_path / "ok", Limits())  # within the defaults, all three agree
