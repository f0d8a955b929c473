"""``mirror``: copy between warehouses, verifying the hash while the bytes stream."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import PACK_FLATTEN
from repeatr.warehouse.mirror import mirror

from .conftest import SANS_BASE, WITH_BASE, Served, Wares, ca_path, files_under


@pytest.fixture
def ca_base(tmp_path: Path) -> Path:
    base = tmp_path / "ca"
    base.mkdir()
    return base


def test_file_to_ca_file(wares: Wares, ca_base: Path) -> None:
    source = f"file://{wares.with_base}"
    result = mirror(WITH_BASE, [source], f"ca+file://{ca_base}/")
    assert result and not result.already_present
    assert result.source == source
    assert result.bytes == wares.with_base.stat().st_size
    assert ca_path(ca_base, WITH_BASE).read_bytes() == wares.with_base.read_bytes()
    assert not [p for p in ca_base.rglob(".*")]


def test_http_to_ca_file(wares: Wares, ca_base: Path, http_root: Served, refused_url: str) -> None:
    dest = ca_path(http_root.root, SANS_BASE)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(wares.sans_base, dest)
    sources = [refused_url + "/", "ca+" + http_root.url + "/"]
    result = mirror(SANS_BASE, sources, f"ca+file://{ca_base}")
    assert result.source == sources[1]
    assert ca_path(ca_base, SANS_BASE).read_bytes() == wares.sans_base.read_bytes()


def test_already_present_does_nothing(wares: Wares, ca_base: Path) -> None:
    target = f"ca+file://{ca_base}"
    assert mirror(WITH_BASE, [f"file://{wares.with_base}"], target)
    before = ca_path(ca_base, WITH_BASE).stat()
    # The source does not even need to be reachable now.
    again = mirror(WITH_BASE, ["file:///nonexistent/x.tgz"], target)
    assert not again and again.already_present and again.source is None
    assert ca_path(ca_base, WITH_BASE).stat().st_mtime_ns == before.st_mtime_ns


def test_mismatch_commits_nothing(wares: Wares, ca_base: Path) -> None:
    # A valid archive under the wrong name: sansBase's bytes labelled withBase.
    liar = wares.with_base.parent / "liar.tgz"
    shutil.copyfile(wares.sans_base, liar)
    with pytest.raises(RepeatrError) as err:
        mirror(WITH_BASE, [f"file://{liar}"], f"ca+file://{ca_base}")
    assert err.value.category is Category.HASH_MISMATCH
    assert files_under(ca_base) == []


def test_garbage_source_commits_nothing(wares: Wares, ca_base: Path) -> None:
    garbage = wares.with_base.parent / "garbage.tgz"
    data = wares.with_base.read_bytes()
    garbage.write_bytes(data[: len(data) // 2])  # a truncated download
    with pytest.raises(RepeatrError) as err:
        mirror(WITH_BASE, [f"file://{garbage}"], f"ca+file://{ca_base}")
    assert err.value.category is Category.WARE_CORRUPT
    assert files_under(ca_base) == []


def test_file_target_is_hashed_not_trusted(wares: Wares, tmp_path: Path) -> None:
    target = tmp_path / "out.tgz"
    shutil.copyfile(wares.sans_base, target)  # some other ware sits there
    result = mirror(WITH_BASE, [f"file://{wares.with_base}"], f"file://{target}")
    assert result
    assert target.read_bytes() == wares.with_base.read_bytes()
    assert not mirror(WITH_BASE, [f"file://{wares.with_base}"], f"file://{target}")
    assert files_under(tmp_path / "src") == ["tar_sansBase.tgz", "tar_withBase.tgz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tgz", "src"]


def test_missing_everywhere_is_not_found(tmp_path: Path, ca_base: Path) -> None:
    with pytest.raises(RepeatrError) as err:
        mirror(WITH_BASE, [f"file://{tmp_path}/none.tgz"], f"ca+file://{ca_base}")
    assert err.value.category is Category.WARE_NOT_FOUND
    assert files_under(ca_base) == []


def test_http_target_is_unwritable(wares: Wares, refused_url: str) -> None:
    with pytest.raises(RepeatrError) as err:
        mirror(WITH_BASE, [f"file://{wares.with_base}"], "ca+" + refused_url + "/wh/")
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE


def test_large_ware_over_http_is_copied_byte_for_byte(
    tmp_path: Path, http_root: Served, ca_base: Path
) -> None:
    """Several buffers' worth, plus bytes after the tar end marker, all reach the target."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "random.bin").write_bytes(os.urandom(3 << 20))
    (tree / "empty").write_bytes(b"")
    packed = http_root.root / "big.tgz"
    with packed.open("wb") as out:
        ware = pack_dir(tree, out, filters=PACK_FLATTEN)
    result = mirror(ware, [f"{http_root.url}/big.tgz"], f"ca+file://{ca_base}")
    assert result.bytes == packed.stat().st_size
    assert ca_path(ca_base, ware).read_bytes() == packed.read_bytes()
