"""``file://``: one ware file; reading, error categories, and temp-then-rename saves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.warehouse import warehouse_for

from .conftest import SANS_BASE, WITH_BASE, Wares, files_under


def _category(url: str) -> Category:
    with pytest.raises(RepeatrError) as err, warehouse_for(url).open_ware(WITH_BASE):
        pass
    return err.value.category


def test_read_absolute(wares: Wares) -> None:
    with warehouse_for(f"file://{wares.with_base}").open_ware(WITH_BASE) as stream:
        assert stream.read() == wares.with_base.read_bytes()


def test_read_relative(wares: Wares, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(wares.with_base.parent.parent)
    for url in ("file://./src/tar_withBase.tgz", "file://src/tar_withBase.tgz"):
        with warehouse_for(url).open_ware(WITH_BASE) as stream:
            assert stream.read() == wares.with_base.read_bytes()


def test_stream_is_closed_after_the_context(wares: Wares) -> None:
    with warehouse_for(f"file://{wares.with_base}").open_ware(WITH_BASE) as stream:
        pass
    assert stream.closed


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    assert _category(f"file://{tmp_path}/nope.tgz") is Category.WARE_NOT_FOUND


def test_missing_dir_is_unavailable(tmp_path: Path) -> None:
    assert _category(f"file://{tmp_path}/nodir/x.tgz") is Category.WAREHOUSE_UNAVAILABLE


def test_parent_is_a_file_is_unavailable(wares: Wares) -> None:
    assert _category(f"file://{wares.with_base}/x.tgz") is Category.WAREHOUSE_UNAVAILABLE


def test_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError) as err, warehouse_for(f"file://{tmp_path}").open_ware(
        WITH_BASE
    ):
        pass
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE
    assert "ca+file://" in str(err.value)  # the hint


def test_fifo_is_unavailable_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.tgz"
    os.mkfifo(fifo)
    assert _category(f"file://{fifo}") is Category.WAREHOUSE_UNAVAILABLE


def test_save_commit_renames_into_place(tmp_path: Path, wares: Wares) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = out / "saved.tgz"
    data = wares.with_base.read_bytes()
    with warehouse_for(f"file://{target}").start_save() as save:
        save.file.write(data)
        save.file.flush()
        # In progress: only a dot-temp beside the target, nothing at the target.
        (temp,) = out.iterdir()
        assert temp.name.startswith(".saved.tgz.tmp-")
        assert not target.exists()
        save.commit(WITH_BASE)
    assert target.read_bytes() == data
    assert files_under(out) == ["saved.tgz"]
    assert target.stat().st_mode & 0o777 == 0o644 & ~_umask()


def test_save_replaces_an_existing_ware(wares: Wares) -> None:
    with warehouse_for(f"file://{wares.with_base}").start_save() as save:
        save.file.write(wares.sans_base.read_bytes())
        save.commit(SANS_BASE)
    assert wares.with_base.read_bytes() == wares.sans_base.read_bytes()
    assert files_under(wares.with_base.parent) == ["tar_sansBase.tgz", "tar_withBase.tgz"]


def test_save_without_commit_leaves_nothing(tmp_path: Path) -> None:
    with warehouse_for(f"file://{tmp_path}/x.tgz").start_save() as save:
        save.file.write(b"partial")
    assert files_under(tmp_path) == []


def test_save_aborted_by_exception_leaves_old_ware(wares: Wares) -> None:
    before = wares.with_base.read_bytes()
    with pytest.raises(KeyError), warehouse_for(f"file://{wares.with_base}").start_save() as save:
        save.file.write(b"partial")
        raise KeyError("boom")
    assert wares.with_base.read_bytes() == before
    assert files_under(wares.with_base.parent) == ["tar_sansBase.tgz", "tar_withBase.tgz"]


def test_commit_twice_is_an_error(tmp_path: Path) -> None:
    with warehouse_for(f"file://{tmp_path}/x.tgz").start_save() as save:
        save.file.write(b"data")
        save.commit(WITH_BASE)
        with pytest.raises(RepeatrError) as err:
            save.commit(WITH_BASE)
    assert err.value.category is Category.INTERNAL


def test_save_into_missing_dir_is_unwritable(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError) as err, warehouse_for(
        f"file://{tmp_path}/nodir/x.tgz"
    ).start_save():
        pass
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE
    assert not (tmp_path / "nodir").exists()


def test_save_over_a_directory_is_unwritable(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(RepeatrError) as err, warehouse_for(f"file://{tmp_path}/d").start_save():
        pass
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
