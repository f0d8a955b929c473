"""Cancelling a run stuck in a long fetch, or in a wait for another run's fetch.

A real HTTP server (in this process, on 127.0.0.1) serves the warehouse at
~2 MB/s, so fetching the ~130 MB big ware would take a minute. A run must
still honour SIGTERM / SIGINT within 5 s there: the unpack runs in a worker
thread, which checks for cancellation between archive members and blocks of
content; a run waiting for another's lock on the same ware checks between
attempts. Without those checks the run would only notice once the whole
ware had arrived.
"""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any, BinaryIO

import pytest

from repeatr.errors import Category

from .conftest import Area, Stress, assert_host_clean, host_mounts, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

CHUNK = 64 << 10
PAUSE = 0.03  # ~2 MB/s


class _SlowHandler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source: Any, outputfile: BinaryIO) -> None:  # type: ignore[override]
        try:
            while block := source.read(CHUNK):
                outputfile.write(block)
                time.sleep(PAUSE)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the run went away: that is the point

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_url(area: Area) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(_SlowHandler, directory=str(area.warehouse))
    )
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ca+http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def slow_formula(stress: Stress, url: str, name: str) -> Any:
    f = stress.formula("true", name=name, root=stress.area.big)
    text = f.read_text().replace(stress.area.url, url)
    f.write_text(text)
    return f


def unpacking(stress: Stress) -> bool:
    return any(name.startswith("unpack.") for name in stress.cache_temps())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_cancel_during_a_long_fetch(stress: Stress, slow_url: str, sig: signal.Signals) -> None:
    mounts_before = host_mounts(stress.area)
    f = slow_formula(stress, slow_url, "slow.json")
    with stress.started("run", str(f), "-e", "ns", "--debug") as (proc, lines):
        wait_until(lambda: unpacking(stress), 30, "the unpack has started")
        time.sleep(1.0)  # well into the fetch: ~2 MB of ~130
        assert proc.poll() is None, lines.text()
        t0 = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
        took = time.monotonic() - t0
    assert code == Category.CANCELLED, lines.text()
    assert took < 5.0, f"took {took:.1f}s to honour {sig.name}"
    assert stress.shelves() == []
    assert_host_clean(stress, mounts_before, repeatr_pids={proc.pid})


def test_cancel_while_waiting_for_another_runs_fetch(stress: Stress, slow_url: str) -> None:
    mounts_before = host_mounts(stress.area)
    first = slow_formula(stress, slow_url, "first.json")
    second = stress.formula("echo second", name="second.json", root=stress.area.big)
    with stress.started("run", str(first), "-e", "ns") as (a, a_lines):
        # The second run starts only once the first holds the ware's lock.
        wait_until(lambda: unpacking(stress), 30, "the first run's unpack has started")
        with stress.started("run", str(second), "-e", "ns") as (b, b_lines):
            b_lines.wait_for("waiting for the lock on cached ware", timeout=30)
            t0 = time.monotonic()
            b.send_signal(signal.SIGTERM)
            code = b.wait(timeout=120)
            took = time.monotonic() - t0
            assert code == Category.CANCELLED, b_lines.text()
            assert took < 5.0, f"took {took:.1f}s to stop waiting"
        assert a.poll() is None  # the fetching run goes on...
        a.send_signal(signal.SIGTERM)  # ...until cancelled too
        assert a.wait(timeout=30) == Category.CANCELLED, a_lines.text()
    assert_host_clean(stress, mounts_before, repeatr_pids={a.pid, b.pid})


def test_sigkill_during_a_long_fetch_leaves_a_temp_dir_the_next_run_removes(
    stress: Stress, slow_url: str
) -> None:
    mounts_before = host_mounts(stress.area)
    f = slow_formula(stress, slow_url, "slow.json")
    with stress.started("run", str(f), "-e", "ns") as (proc, _lines):
        wait_until(lambda: unpacking(stress), 30, "the unpack has started")
        proc.kill()
        proc.wait(timeout=30)
    assert unpacking(stress)  # a SIGKILL cannot clean up...
    tiny = stress.formula("true", name="tiny.json")
    assert stress.run("run", str(tiny), "-e", "ns").code == 0
    assert_host_clean(stress, mounts_before, repeatr_pids={proc.pid})  # ...the next run did

