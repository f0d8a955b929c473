"""``ca+file://``: the sharded content-addressed layout, shared with rio."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.warehouse import warehouse_for

from .conftest import SANS_BASE, WITH_BASE, Wares, ca_path, files_under


def _save(url: str, data: bytes) -> None:
    with warehouse_for(url).start_save() as save:
        save.file.write(data)
        save.commit(WITH_BASE)


def test_save_then_read(tmp_path: Path, wares: Wares) -> None:
    base = tmp_path / "wh"
    base.mkdir()
    data = wares.with_base.read_bytes()
    _save(f"ca+file://{base}/", data)
    assert ca_path(base, WITH_BASE).read_bytes() == data
    h = WITH_BASE.hash
    assert files_under(base) == [h[:3], f"{h[:3]}/{h[3:6]}", f"{h[:3]}/{h[3:6]}/{h}"]
    with warehouse_for(f"ca+file://{base}").open_ware(WITH_BASE) as stream:
        assert stream.read() == data


def test_read_a_rio_layout_written_by_hand(tmp_path: Path, wares: Wares) -> None:
    dest = ca_path(tmp_path, SANS_BASE)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(wares.sans_base.read_bytes())
    with warehouse_for(f"ca+file://{tmp_path}").open_ware(SANS_BASE) as stream:
        assert stream.read() == wares.sans_base.read_bytes()


def test_relative_base(tmp_path: Path, wares: Wares, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wh").mkdir()
    monkeypatch.chdir(tmp_path)
    _save("ca+file://./wh/", wares.with_base.read_bytes())
    assert ca_path(tmp_path / "wh", WITH_BASE).is_file()


def test_temp_file_lives_in_base_while_saving(tmp_path: Path) -> None:
    with warehouse_for(f"ca+file://{tmp_path}").start_save() as save:
        (temp,) = tmp_path.iterdir()
        assert temp.name.startswith(".tmp-")
        save.file.write(b"x")
    assert files_under(tmp_path) == []


def test_absent_ware_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError) as err, warehouse_for(f"ca+file://{tmp_path}").open_ware(
        WITH_BASE
    ):
        pass
    assert err.value.category is Category.WARE_NOT_FOUND


@pytest.mark.parametrize("make", ["missing", "file"])
def test_bad_base_is_unavailable_to_read_and_unwritable(tmp_path: Path, make: str) -> None:
    base = tmp_path / "wh"
    if make == "file":
        base.write_bytes(b"")
    wh = warehouse_for(f"ca+file://{base}")
    with pytest.raises(RepeatrError) as err, wh.open_ware(WITH_BASE):
        pass
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE
    with pytest.raises(RepeatrError) as err, wh.start_save():
        pass
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE
    assert files_under(tmp_path) == ([] if make == "missing" else ["wh"])


def test_commit_of_present_ware_drops_the_temp(tmp_path: Path, wares: Wares) -> None:
    data = wares.with_base.read_bytes()
    _save(f"ca+file://{tmp_path}", data)
    # Same ID again with other bytes: the name already proves the content,
    # so the existing file stays and the new bytes are dropped.
    _save(f"ca+file://{tmp_path}", b"other bytes")
    assert ca_path(tmp_path, WITH_BASE).read_bytes() == data
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))


def test_abort_leaves_no_temp_and_no_shards(tmp_path: Path) -> None:
    with pytest.raises(ValueError), warehouse_for(f"ca+file://{tmp_path}").start_save() as save:
        save.file.write(b"partial")
        raise ValueError("boom")
    assert files_under(tmp_path) == []


def test_empty_ware_is_a_usage_error(tmp_path: Path) -> None:
    from repeatr.model.wareid import WareID

    with pytest.raises(RepeatrError) as err, warehouse_for(f"ca+file://{tmp_path}").open_ware(
        WareID.parse("tar:-")
    ):
        pass
    assert err.value.category is Category.USAGE


def test_temp_of_a_killed_save_is_reaped_by_the_next_save(tmp_path: Path) -> None:
    """A save killed by SIGKILL leaves its temp file; the next save removes it."""
    import subprocess
    import sys

    base = tmp_path / "wh"
    base.mkdir()
    script = (
        "import os, sys\n"
        "from repeatr.warehouse import warehouse_for\n"
        f"cm = warehouse_for('ca+file://{base}/').start_save()\n"
        "s = cm.__enter__()\n"
        "s.file.write(b'partial'); s.file.flush()\n"
        "os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    left = [p.name for p in base.iterdir()]
    assert len(left) == 1 and left[0].startswith(".tmp-")
    with warehouse_for(f"ca+file://{base}/").start_save():
        assert [p for p in base.iterdir() if p.name == left[0]] == []
