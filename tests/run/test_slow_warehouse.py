"""Whole runs fetching an input from a warehouse that trickles (issue 12, point 2).

The server (a thread of this process, on 127.0.0.1) sends one byte every
0.3 s and never finishes. Before the fix a ``repeatr run`` fetching from it
ignored SIGTERM (twice) for as long as the body took, holding the ware's
lock; now it is cancelled within a second or two, and the minimum rate
(configured through the environment) fails the fetch with an error naming
the URL and the rate.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.cache.layout import Layout
from repeatr.errors import Category
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import Filters
from repeatr.model.wareid import WareID
from tests.warehouse.trickle import Trickle, trickling

from .conftest import Runner, wait_for

pytestmark = pytest.mark.root


@pytest.fixture
def server() -> Iterator[Trickle]:
    with trickling(0.3) as s:
        yield s


def _data_ware(tmp_path: Path) -> WareID:
    """A real ware ID (of a tiny tree) that the trickling server will never deliver."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("never arrives\n")
    return pack_dir(tree, None, filters=Filters())


def _formula(runner: Runner, ware: WareID, server: Trickle) -> Path:
    path = runner.formula("/bin/true", inputs={"/data": str(ware)})
    text = path.read_text().replace(
        f'"/data": ["{runner.busybox.warehouse}"]', f'"/data": ["ca+{server.url}/"]'
    )
    assert server.url in text
    path.write_text(text)
    return path


def _start(runner: Runner, formula: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        runner.command("run", str(formula), "--executor", "ns"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_ends_a_run_fetching_from_a_trickling_server(
    runner: Runner, server: Trickle, tmp_path: Path, backend: str
) -> None:
    ware = _data_ware(tmp_path)
    formula = _formula(runner, ware, server)
    layout = Layout(runner.state)
    proc = _start(runner, formula, REPEATR_ASYNC_BACKEND=backend)
    try:
        server.wait_sending(3)  # the fetch is under way, and holds the ware's lock
        assert not _lock_is_free(layout.lock(ware))
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate()
    assert code == Category.CANCELLED, err
    assert took < 2.0, f"took {took:.1f}s to honour SIGTERM"
    assert server.wait_closed(5), "the connection was left open"
    assert _lock_is_free(layout.lock(ware))
    assert not layout.shelf(ware).exists(), "a partial shelf"
    assert layout.list_temps() == [], "an unpack temp dir was left"
    assert runner.work_dirs() == []


def test_a_fetch_below_the_configured_minimum_rate_fails_naming_url_and_rate(
    runner: Runner, server: Trickle, tmp_path: Path
) -> None:
    ware = _data_ware(tmp_path)
    formula = _formula(runner, ware, server)
    proc = _start(
        runner, formula, REPEATR_FETCH_MIN_RATE="100", REPEATR_FETCH_RATE_WINDOW="2"
    )
    t0 = time.monotonic()
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    took = time.monotonic() - t0
    assert proc.returncode == Category.WAREHOUSE_UNAVAILABLE, err
    assert took < 10, took
    assert server.url in err and "too slow" in err and "100 bytes/s" in err, err
    assert "Traceback" not in err
    layout = Layout(runner.state)
    assert not layout.shelf(ware).exists()
    assert layout.list_temps() == []
    wait_for(lambda: runner.work_dirs() == [])


def test_sigterm_ends_repeatr_unpack_from_a_trickling_server(
    runner: Runner, server: Trickle, tmp_path: Path
) -> None:
    """The same for a command without an event loop: the signal interrupts a sliced wait."""
    ware = _data_ware(tmp_path)
    dest = tmp_path / "dest"
    proc = subprocess.Popen(
        runner.command("unpack", str(ware), str(dest), "--source", f"ca+{server.url}/"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        server.wait_sending(3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate()
    assert code == Category.CANCELLED, err
    assert took < 2.0, f"took {took:.1f}s to honour SIGTERM"
    assert not dest.exists() or os.listdir(dest) == []
    assert server.wait_closed(5), "the connection was left open"
