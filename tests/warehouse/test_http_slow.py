"""A server that trickles: the minimum rate ends the fetch, a cancel ends it at once.

Against a real loopback server sending one byte every 0.2-0.3 s (a read
timeout never trips on it). Before the fix a fetch from it ran until the
whole body had arrived, and a cancelled caller waited as long.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from repeatr.errors import Category, RepeatrError, UsageError
from repeatr.warehouse.http import HTTPWarehouse
from repeatr.warehouse.transfer import MinRate

from .conftest import WITH_BASE
from .trickle import trickling


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_trickling_server_fails_the_minimum_rate() -> None:
    with trickling(0.2) as server:
        url = f"{server.url}/ware.tgz"
        wh = HTTPWarehouse(url, min_rate=MinRate(per_second=1024, window=1.5))
        t0 = time.monotonic()
        with pytest.raises(RepeatrError) as err, wh.open_ware(WITH_BASE) as stream:
            stream.read()
        took = time.monotonic() - t0
        assert server.wait_closed(5), "the connection was left open"
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE
    assert 1.5 <= took < 3.5, took
    message = str(err.value)
    assert url in message and "too slow" in message and "1.0K bytes/s" in message
    assert server.sent >= 5  # it was moving, just too slowly


def test_a_moving_transfer_above_the_minimum_rate_goes_on() -> None:
    with trickling(0.01, length=400) as server:
        wh = HTTPWarehouse(f"{server.url}/w", min_rate=MinRate(per_second=10, window=1.0))
        with wh.open_file() as stream:
            assert stream.read() == b"a" * 400  # ~4 s at ~100 bytes/s


def test_zero_turns_the_minimum_rate_off() -> None:
    with trickling(0.3, length=8) as server:
        wh = HTTPWarehouse(f"{server.url}/w", min_rate=MinRate(per_second=0, window=0.5))
        with wh.open_file() as stream:
            assert stream.read() == b"a" * 8


def test_minimum_rate_from_the_environment() -> None:
    assert MinRate.from_environ({}) == MinRate(1024, 60.0)
    env = {"REPEATR_FETCH_MIN_RATE": "64K", "REPEATR_FETCH_RATE_WINDOW": "7.5"}
    assert MinRate.from_environ(env) == MinRate(64 << 10, 7.5)
    assert MinRate.from_environ({"REPEATR_FETCH_MIN_RATE": "0"}).per_second == 0
    for bad in ({"REPEATR_FETCH_MIN_RATE": "fast"}, {"REPEATR_FETCH_RATE_WINDOW": "-1"}):
        with pytest.raises(UsageError) as err:
            MinRate.from_environ(bad)
        assert next(iter(bad)) in str(err.value)


@pytest.mark.anyio
async def test_cancel_stops_a_trickling_fetch_within_a_second() -> None:
    with trickling(0.3) as server:
        wh = HTTPWarehouse(
            f"{server.url}/w", min_rate=MinRate(0), checkpoint=anyio.from_thread.check_cancelled
        )

        def fetch() -> None:
            with wh.open_file() as stream:
                stream.read()

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, fetch)
            await anyio.to_thread.run_sync(server.wait_sending, 2)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        took = time.monotonic() - t0
        assert took < 1.0, f"the fetch took {took:.2f}s to notice the cancel"
        assert server.wait_closed(5), "the connection was left open"


@pytest.fixture
def certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted by this process's clients."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", os.fspath(cert))
    return cert, key


def test_https_through_sliced_sockets(certificate: tuple[Path, Path]) -> None:
    with (
        trickling(0, length=3_000_000, tls=certificate) as server,
        HTTPWarehouse(f"{server.url}/w").open_file() as stream,
    ):
        assert stream.read() == b"a" * 3_000_000


@pytest.mark.anyio
async def test_cancel_stops_a_trickling_https_fetch(certificate: tuple[Path, Path]) -> None:
    with trickling(0.3, tls=certificate) as server:
        wh = HTTPWarehouse(
            f"{server.url}/w", min_rate=MinRate(0), checkpoint=anyio.from_thread.check_cancelled
        )

        def fetch() -> None:
            with wh.open_file() as stream:
                stream.read()

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, fetch)
            await anyio.to_thread.run_sync(server.wait_sending, 2)
            t0 = time.monotonic()
            tg.cancel_scope.cancel()
        took = time.monotonic() - t0
        assert took < 1.0, f"the fetch took {took:.2f}s to notice the cancel"
        assert server.wait_closed(5), "the connection was left open"
