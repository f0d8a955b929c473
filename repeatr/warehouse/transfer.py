"""HTTP transfers that a cancel stops within a fraction of a second, and that must keep moving.

urllib blocks in ``recv``/``send``/``connect`` for as long as its socket
timeout says, and a worker thread blocked there cannot notice that its run
was cancelled. A server that trickles (one byte every 20 s) never trips a
60 s read timeout either, so a fetch could hold its ware's lock for ever.

So every socket of a :class:`Transfer` waits in slices of :data:`SLICE`
seconds; between slices (and before every read or write) it calls
:meth:`Transfer.tick`, which

- calls the caller's ``checkpoint`` (``anyio.from_thread.check_cancelled``
  for a run): whatever it raises, cancellation included, stops the transfer;
- fails it when no byte moved for ``stall`` seconds (the warehouse's
  ``timeout``), or when fewer bytes than :class:`MinRate` asks for moved
  over its window: a ``WarehouseError`` (WAREHOUSE_UNAVAILABLE) naming the
  request and the rate.

The minimum rate comes from ``REPEATR_FETCH_MIN_RATE`` (bytes per second,
``1K`` by default, ``0`` turns it off) and ``REPEATR_FETCH_RATE_WINDOW``
(seconds, 60 by default), read from the environment like the proxy
settings. Slicing works for TLS too: a timed-out ``SSL_read`` or handshake
is retried, the standard non-blocking pattern. Name resolution
(``getaddrinfo``) is the one wait that cannot be sliced.
"""

from __future__ import annotations

import errno
import functools
import http.client
import os
import select
import socket
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from repeatr.errors import Category, UsageError, WarehouseError
from repeatr.model.units import format_size, parse_size

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

#: Longest a socket call waits before the transfer checks on itself (seconds).
SLICE = 0.2

RATE_ENV = "REPEATR_FETCH_MIN_RATE"
WINDOW_ENV = "REPEATR_FETCH_RATE_WINDOW"


class MinRate(NamedTuple):
    """At least ``per_second`` bytes a second, averaged over any ``window`` seconds."""

    per_second: int = 1024
    window: float = 60.0

    @classmethod
    def from_environ(cls, environ: dict[str, str] | os._Environ[str] = os.environ) -> MinRate:
        """From ``REPEATR_FETCH_MIN_RATE`` and ``REPEATR_FETCH_RATE_WINDOW`` (defaults if unset)."""
        rate, window = cls()
        if environ.get(RATE_ENV):
            rate = parse_size(environ[RATE_ENV].removesuffix("/s"), RATE_ENV)
        if environ.get(WINDOW_ENV):
            try:
                window = float(environ[WINDOW_ENV])
            except ValueError:
                window = -1.0
            if not 0 < window < float("inf"):
                raise UsageError(
                    f"{WINDOW_ENV}: invalid window {environ[WINDOW_ENV]!r}"
                    " (expected a number of seconds, e.g. 60)"
                )
        return cls(rate, window)


class Transfer:
    """One request's progress, checked whenever one of its sockets would wait."""

    def __init__(
        self,
        what: str,
        *,
        stall: float,
        min_rate: MinRate,
        checkpoint: Callable[[], None] | None = None,
    ) -> None:
        #: ``GET <url>``: names the request in errors (never with a password).
        self.what = what
        self.stall = stall
        self.min_rate = min_rate
        self.checkpoint = checkpoint
        self.moved = 0
        now = time.monotonic()
        self._last_progress = now
        # (time, bytes moved by then), about one a second; the first is the
        # newest one at least a window old once the transfer is that old.
        self._marks: deque[tuple[float, int]] = deque([(now, 0)])

    def count(self, n: int) -> None:
        if n > 0:
            self.moved += n
            self._last_progress = time.monotonic()

    def tick(self) -> None:
        """Raise if the caller cancelled, or the transfer stalled or is too slow."""
        if self.checkpoint is not None:
            self.checkpoint()
        now = time.monotonic()
        if now - self._last_progress >= self.stall:
            raise WarehouseError(
                f"{self.what}: no data for {self.stall:g} s (timed out)",
                category=Category.WAREHOUSE_UNAVAILABLE,
            )
        rate, window = self.min_rate
        if not rate:
            return
        marks = self._marks
        if now - marks[-1][0] >= 1.0:
            marks.append((now, self.moved))
        while len(marks) > 1 and now - marks[1][0] >= window:
            marks.popleft()
        since, moved_then = marks[0]
        elapsed = now - since
        if elapsed >= window and self.moved - moved_then < rate * elapsed:
            got = self.moved - moved_then
            raise WarehouseError(
                f"{self.what}: too slow: {format_size(got)} bytes in the last {elapsed:.0f} s,"
                f" below the minimum of {format_size(rate)} bytes/s",
                category=Category.WAREHOUSE_UNAVAILABLE,
                hint=f"the server or the network is stalling; {RATE_ENV} (bytes/s, 0: off)"
                f" and {WINDOW_ENV} (seconds) set the minimum",
            )

    def wait_ready(
        self, sock: socket.socket, events: int, deadline: float | None = None
    ) -> None:
        """Wait (in slices, ticking) until ``sock`` is ready for ``events``."""
        poller = select.poll()
        poller.register(sock, events)
        while True:
            self.tick()
            if poller.poll(SLICE * 1000):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("timed out")


class _Sliced:
    """recv_into/sendall that wait in slices: for a socket class and its TLS twin."""

    transfer: Transfer

    def recv_into(self, buffer: WriteableBuffer, *args: Any) -> int:
        while True:
            self.transfer.tick()
            try:
                n: int = super().recv_into(buffer, *args)  # type: ignore[misc]
            except TimeoutError:
                continue  # nothing within SLICE: check on the transfer, then wait again
            self.transfer.count(n)
            return n

    def sendall(self, data: ReadableBuffer, *args: Any) -> None:
        view = memoryview(data).cast("B")
        while view:
            self.transfer.tick()
            try:
                n: int = self.send(view, *args)  # type: ignore[attr-defined]
            except TimeoutError:
                continue
            self.transfer.count(n)
            view = view[n:]


class SlicedSocket(_Sliced, socket.socket):
    pass


class SlicedSSLSocket(_Sliced, ssl.SSLSocket):
    pass


def connect(
    transfer: Transfer, address: tuple[str, int], timeout: float, source: Any = None
) -> SlicedSocket:
    """``socket.create_connection``, with a connect a cancel can stop."""
    host, port = address
    deadline = time.monotonic() + timeout
    error: OSError | None = None
    for family, kind, proto, _name, addr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = SlicedSocket(family, kind, proto)
        try:
            sock.transfer = transfer
            if source:
                sock.bind(source)
            sock.setblocking(False)
            code = sock.connect_ex(addr)
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
            transfer.wait_ready(sock, select.POLLOUT, deadline)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            sock.settimeout(SLICE)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"getaddrinfo({host!r}) found no address")


def _timeout(conn: http.client.HTTPConnection) -> float:
    return conn.timeout if conn.timeout is not None else 60.0  # urllib always sets one


class _HTTPConnection(http.client.HTTPConnection):
    transfer: Transfer

    def connect(self) -> None:
        source = getattr(self, "source_address", None)
        self.sock = connect(self.transfer, (self.host, self.port), _timeout(self), source)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tunnel_host:  # type: ignore[attr-defined]
            self._tunnel()  # type: ignore[attr-defined]


class _HTTPSConnection(http.client.HTTPSConnection):
    transfer: Transfer
    _context: ssl.SSLContext

    def connect(self) -> None:
        _HTTPConnection.connect(self)  # type: ignore[arg-type]
        hostname = self._tunnel_host or self.host  # type: ignore[attr-defined]
        sock = self._context.wrap_socket(
            self.sock, server_hostname=hostname, do_handshake_on_connect=False
        )
        assert isinstance(sock, SlicedSSLSocket)
        sock.transfer = self.transfer
        self.sock = sock
        deadline = time.monotonic() + _timeout(self)
        while True:
            self.transfer.tick()
            try:
                sock.do_handshake()
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, transfer: Transfer) -> None:
        super().__init__()
        self.transfer = transfer

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        transfer = self.transfer

        def connection(*args: Any, **kw: Any) -> http.client.HTTPConnection:
            conn = _HTTPConnection(*args, **kw)
            conn.transfer = transfer
            return conn

        return self.do_open(connection, req)


@functools.cache
def _tls_context(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    # Loading the CA certificates takes ~0.2 s: once per process (per setting
    # of the variables OpenSSL reads them from), as urllib's own opener does.
    context = ssl.create_default_context()
    context.sslsocket_class = SlicedSSLSocket
    return context


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, transfer: Transfer) -> None:
        super().__init__()
        self.transfer = transfer

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        transfer = self.transfer

        def connection(*args: Any, **kw: Any) -> http.client.HTTPSConnection:
            conn = _HTTPSConnection(*args, **kw)
            conn.transfer = transfer
            return conn

        context = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return self.do_open(connection, req, context=context)


def urlopen(
    request: urllib.request.Request, transfer: Transfer, timeout: float
) -> http.client.HTTPResponse:
    """``urllib.request.urlopen`` whose every wait belongs to ``transfer``."""
    opener = urllib.request.build_opener(_HTTPHandler(transfer), _HTTPSHandler(transfer))
    response: http.client.HTTPResponse = opener.open(request, timeout=timeout)
    return response
