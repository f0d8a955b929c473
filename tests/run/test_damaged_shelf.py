"""Issue 12.5 as a user meets it: a damaged shelf whose record is lost is not laundered."""

from __future__ import annotations

import pytest

from repeatr.cache.layout import Layout
from repeatr.errors import Category
from repeatr.model.wareid import WareID

from .conftest import Runner

pytestmark = pytest.mark.root


def test_lost_record_and_deleted_file_the_next_run_unpacks_afresh(runner: Runner) -> None:
    f = runner.formula("/bin/sh", "-c", "test -f /etc/passwd")
    assert runner.run("run", str(f), "--executor", "ns", "--no-memo").code == 0
    layout = Layout(runner.state)
    ware = WareID.parse(runner.busybox.ware)
    shelf, record = layout.shelf(ware), layout.record(ware)
    (shelf / "etc" / "passwd").unlink()
    record.write_bytes(record.read_bytes()[:20])  # truncated

    res = runner.run("cache", "verify")
    assert res.code == Category.CACHE, res.stderr
    assert str(ware) in res.stderr and "do not match the ware ID" in res.stderr

    res = runner.run("run", str(f), "--executor", "ns", "--no-memo", "--debug")
    assert res.code == 0, res.stderr[-2000:]  # the job sees the whole ware again
    assert f"{ware} unpacked" in res.stderr
    assert (shelf / "etc" / "passwd").is_file()

    res = runner.run("cache", "verify")
    assert res.code == 0, res.stderr
    assert "all shelves intact" in res.stdout
