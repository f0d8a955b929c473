"""Fixtures for warehouse tests: real ware files and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from repeatr.model.wareid import WareID
from tests import rio
from tests.rio import FIXTURES

_FIXTURES = FIXTURES

WITH_BASE = WareID.parse(rio.WITH_BASE)
SANS_BASE = WareID.parse(rio.SANS_BASE)


@dataclass(frozen=True)
class Wares:
    """Copies of the rio fixtures in the test's tmp dir."""

    with_base: Path
    sans_base: Path


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every request on 127.0.0.1 even if the environment names a proxy."""
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def wares(tmp_path: Path) -> Wares:
    src = tmp_path / "src"
    src.mkdir()
    with_base = src / "tar_withBase.tgz"
    sans_base = src / "tar_sansBase.tgz"
    shutil.copyfile(_FIXTURES / "tar_withBase.tgz", with_base)
    shutil.copyfile(_FIXTURES / "tar_sansBase.tgz", sans_base)
    return Wares(with_base, sans_base)


def ca_path(base: Path, ware: WareID) -> Path:
    return base / ware.hash[0:3] / ware.hash[3:6] / ware.hash


def files_under(root: Path) -> list[str]:
    """Every entry below root, relative, sorted: to show nothing stray was left."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory; /status/<code> answers with that code; /short sends half a body."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/status/"):
            code = int(self.path.split("/")[2])
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.close_connection = True
            return
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread


@dataclass(frozen=True)
class Served:
    root: Path
    url: str


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[Served]:
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http"
    )
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def refused_url() -> str:
    """A URL on a port where nothing listens (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A URL whose server accepts connections (kernel backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/ware.tgz"
