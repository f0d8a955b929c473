"""``http(s)://`` and ``ca+http(s)://``: read-only warehouses over HTTP.

As in rio's ``kvhttp``: ``http(s)://`` names one ware file (the URL is
fetched as-is); ``ca+http(s)://base/`` is the ``ca+file`` layout served by any
static web server, the ware at ``base/<hash[0:3]>/<hash[3:6]>/<hash>`` (a
trailing slash on the base makes no difference; a ``?query`` is kept).

Status mapping: 200 is the ware; 404 and 410 are WARE_NOT_FOUND; any other
status, a refused connection, a DNS failure, a TLS error or a timeout is
WAREHOUSE_UNAVAILABLE, naming the URL and the reason, so fetching moves on to
the next source. A body that breaks off mid-way (connection reset, short
read, no data for ``timeout`` seconds, a rate below the minimum) raises
WAREHOUSE_UNAVAILABLE from ``read()``. The body is streamed, never held in
memory. Every wait on the network can be cancelled within a fraction of a
second (``checkpoint``), and a transfer slower than ``REPEATR_FETCH_MIN_RATE``
fails: :mod:`repeatr.warehouse.transfer`. Proxy settings come from the environment
(``http_proxy``, ``no_proxy``), as for any urllib client.

Credentials in the URL (``https://user:password@host/...``, ``%xx``-escaped)
are sent as HTTP Basic auth on every request to that host and never on a
redirect elsewhere; the request URLs and every message carry no password.

Saving (``start_save``) is in :mod:`repeatr.warehouse.httpwrite`: PUT to a
temp name, then WebDAV MOVE into place.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import posixpath
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from repeatr import __version__
from repeatr.errors import Category, UsageError, WarehouseError
from repeatr.model.wareid import WareID
from repeatr.warehouse import Warehouse, ca_segments, redact
from repeatr.warehouse.transfer import MinRate, Transfer, urlopen

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from repeatr.warehouse.httpwrite import HTTPSave

#: Seconds to wait for the connection, and for any byte at all; a stalled
#: server must not hang a run forever. A server that trickles fails the
#: minimum rate instead (:mod:`repeatr.warehouse.transfer`).
DEFAULT_TIMEOUT = 60.0

_NOT_FOUND = (404, 410)
_BUFFER = 1 << 16


class _Body(io.RawIOBase):
    """The response body, with read failures translated to WAREHOUSE_UNAVAILABLE."""

    def __init__(self, response: http.client.HTTPResponse, url: str) -> None:
        super().__init__()
        self._response = response
        self._url = url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        try:
            # read1-style: return what has arrived, so an unpack makes progress
            # while a slow download streams instead of waiting for a full buffer.
            n = self._response.readinto1(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise WarehouseError(
                f"download from {self._url} broke off: {exc!r}",
                category=Category.WAREHOUSE_UNAVAILABLE,
            ) from exc
        # http.client reports a body shorter than its Content-Length as a
        # plain end of stream; a truncated ware must not look complete.
        missing = self._response.length
        if n == 0 and memoryview(buffer).nbytes and missing:
            raise WarehouseError(
                f"download from {self._url} broke off: connection closed {missing} bytes early",
                category=Category.WAREHOUSE_UNAVAILABLE,
            )
        return n

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


class HTTPWarehouse(Warehouse):
    """A ware file or a content-addressed warehouse behind an HTTP(S) URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        min_rate: MinRate | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(url)
        parts = urlsplit(url)
        self.content_addressed = parts.scheme.startswith("ca+")
        if not parts.hostname:
            raise UsageError(f"warehouse URL {redact(url)!r} has no host")
        #: Basic auth from the URL's user info; the URL used for requests has none.
        self.authorization = basic_authorization(parts)
        self._parts = parts._replace(
            scheme=parts.scheme.removeprefix("ca+"),
            netloc=parts.netloc.rpartition("@")[2],
            fragment="",
        )
        self.timeout = timeout
        #: Slower transfers fail (see repeatr.warehouse.transfer); default from the environment.
        self.min_rate = MinRate.from_environ() if min_rate is None else min_rate
        #: Called whenever a transfer would wait: a cancelled caller's raises.
        self.checkpoint = checkpoint

    def ware_url(self, ware: WareID) -> str:
        """The URL fetched for ``ware`` (without credentials)."""
        if not self.content_addressed:
            return self.file_url()
        return self.base_url(*ca_segments(ware))

    def file_url(self) -> str:
        """The URL as given, for single-ware kinds (without credentials or fragment)."""
        return urlunsplit(self._parts)

    def base_url(self, *segments: str) -> str:
        """The base of a ``ca+`` warehouse joined with ``segments`` (none: the base itself).

        The path is normalised (``//a/./b/`` is ``/a/b``); the query is kept.
        """
        base = posixpath.normpath("/" + self._parts.path.lstrip("/"))
        return urlunsplit(self._parts._replace(path=posixpath.join(base, *segments)))

    def request(self, target: str, method: str = "GET") -> urllib.request.Request:
        """A request to ``target`` (a URL of this warehouse) with our User-Agent and auth."""
        request = urllib.request.Request(
            target, method=method, headers={"User-Agent": f"repeatr/{__version__}"}
        )
        if self.authorization is not None:
            # Unredirected: a redirect to another host must not get the password.
            request.add_unredirected_header("Authorization", self.authorization)
        return request

    def urlopen(self, request: urllib.request.Request) -> http.client.HTTPResponse:
        """Send ``request``; every wait ticks a :class:`Transfer` (cancel, stall, minimum rate)."""
        transfer = Transfer(
            f"{request.get_method()} {redact(request.full_url)}",
            stall=self.timeout,
            min_rate=self.min_rate,
            checkpoint=self.checkpoint,
        )
        return urlopen(request, transfer, self.timeout)

    def _unavailable(self, target: str, reason: object) -> WarehouseError:
        return WarehouseError(
            f"warehouse {redact(self.url)} unavailable: GET {redact(target)}: {reason}",
            category=Category.WAREHOUSE_UNAVAILABLE,
        )

    def open_ware(self, ware: WareID) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(self.ware_url(ware), f"ware {ware}")

    def open_file(self) -> contextlib.AbstractContextManager[BinaryIO]:
        if self.content_addressed:
            return super().open_file()
        return self._open(self.file_url(), "ware file")

    @contextlib.contextmanager
    def _open(self, target: str, what: str) -> Iterator[BinaryIO]:
        request = self.request(target)
        try:
            response = self.urlopen(request)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection
            if exc.code in _NOT_FOUND:
                raise WarehouseError(
                    f"{what} not found in warehouse {redact(self.url)}"
                    f" (HTTP {exc.code} for {redact(target)})",
                    category=Category.WARE_NOT_FOUND,
                ) from exc
            raise self._unavailable(target, f"HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise self._unavailable(target, exc.reason) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise self._unavailable(target, repr(exc)) from exc
        except ValueError as exc:  # http.client.InvalidURL: a bad port, say
            raise UsageError(f"invalid warehouse URL {redact(self.url)!r}: {exc}") from exc
        if response.status != 200:
            response.close()
            raise self._unavailable(target, f"HTTP {response.status} {response.reason}")
        with io.BufferedReader(_Body(response, redact(target)), _BUFFER) as stream:
            yield stream

    def start_save(self) -> contextlib.AbstractContextManager[HTTPSave]:
        from repeatr.warehouse.httpwrite import http_save

        return http_save(self)


def basic_authorization(parts: SplitResult) -> str | None:
    """The ``Authorization`` header for the URL's user info, or None if it has none.

    User and password are ``%xx``-decoded (a ``@`` or ``:`` in a password must
    be escaped in a URL); a user without a password sends an empty one, as Go's
    net/http and curl do.
    """
    if not parts.username:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")
