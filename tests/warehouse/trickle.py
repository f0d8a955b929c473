"""A loopback HTTP server that trickles: one byte every ``interval`` seconds, never done.

It answers every GET with 200 and a large Content-Length, then sends one
byte at a time. A per-read timeout never trips on it; only a minimum rate
(or a cancel) ends a fetch from it. The bytes are ``a``: no compression
magic, and a tar header would take 512 of them, so the reader just waits.
"""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Trickle:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    #: Bytes sent so far, over all requests.
    sent: int = 0
    #: Requests still being answered (their connection is open).
    open: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_sending(self, nbytes: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < nbytes:
            assert time.monotonic() < deadline, "no fetch reached the trickling server"
            time.sleep(0.02)

    def wait_closed(self, timeout: float) -> bool:
        """True once no request is being answered (the client went away)."""
        deadline = time.monotonic() + timeout
        while self.open:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


@contextmanager
def trickling(
    interval: float, length: int = 1 << 20, tls: tuple[Path, Path] | None = None
) -> Iterator[Trickle]:
    """The server; ``tls``: (certificate, key) files to serve https with."""
    state = Trickle("")
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with state.lock:
                state.open += 1
            try:
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                if not interval:  # no trickle: the whole body at once
                    self.wfile.write(b"a" * length)
                    with state.lock:
                        state.sent += length
                    return
                for _ in range(length):
                    self.wfile.write(b"a")
                    self.wfile.flush()
                    with state.lock:
                        state.sent += 1
                    if stop.wait(interval):
                        return
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away: that is the point
            finally:
                with state.lock:
                    state.open -= 1

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
