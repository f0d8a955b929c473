"""Saving wares to ``http(s)://`` and ``ca+http(s)://`` warehouses.

The ware's ID is known only once it is completely written, so the session
spools the bytes to an anonymous local temp file (``tempfile``, so
``TMPDIR`` chooses where; it disappears when closed, even after a crash).
``commit(ware)`` then uploads it so that a reader never sees a partial ware:

1. ``ca+`` kinds: ``HEAD`` the final URL; if the ware is there, done (the
   name proves the content).
2. ``PUT`` the spool to a temp name beside the final one,
   ``<dir>/.<name>.tmp-<random>`` (hashes never start with a dot, so a temp
   upload is never mistaken for a ware).
3. WebDAV ``MOVE`` it to the final URL (``Destination:`` the absolute final
   URL, ``Overwrite: T`` for single-ware URLs, ``Overwrite: F`` for ``ca+``
   kinds, where 412 "already there" is success).

Servers differ; what the client does about it:

- **No MOVE** (405 or 501 on MOVE, e.g. a plain PUT endpoint or an S3-style
  store): fall back to ``PUT`` of the final URL and ``DELETE`` of the temp
  name. On such servers a reader *can* see a partially uploaded ware while
  the PUT runs (it then fails its hash check, it is never accepted).
- **Missing shard directories** (``ca+`` kinds): nginx with
  ``create_full_put_path on`` makes them on PUT. Otherwise the temp PUT
  fails (409 Conflict from Apache and RFC 4918 servers, 500 from nginx, or
  a connection closed mid-upload); then ``MKCOL`` is tried on the two shard
  directories, and the PUT repeated once if that created any. The base
  collection is never created: as for ``ca+file://``, it must exist.
- A single-ware URL's directory is not created either: a 409 there is
  WAREHOUSE_UNWRITABLE telling the user to create it.

Every failure is WAREHOUSE_UNWRITABLE naming the warehouse (password
masked), the request (method and URL, which never carry credentials) and the
status and reason or the connection error; 401/403 say that authorization
failed. ``start_save`` first sends one ``OPTIONS`` request, so an unreachable
server (or rejected credentials, 401) fails before anything is packed; any
other answer, even 405, is fine there.

Leaving the context without a commit (an error while packing, a hash
mismatch, Ctrl-C) closes the spool and, if a temp upload was started,
DELETEs it; a failed commit does the same. A DELETE that fails is ignored:
the one thing left behind is a ``.tmp-`` file, never a ware.
"""

from __future__ import annotations

import contextlib
import http.client
import posixpath
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from repeatr.errors import Category, RepeatrError, UsageError, WarehouseError
from repeatr.model.wareid import WareID
from repeatr.warehouse import SaveSession, ca_segments, redact

if TYPE_CHECKING:
    from repeatr.warehouse.http import HTTPWarehouse

#: Marks an in-progress upload: ``.<name>.tmp-<random>``.
TEMP_MARK = ".tmp-"

_CHUNK = 1 << 20
_MOVED = (200, 201, 204)
_NO_MOVE = (405, 501)
#: What a PUT into a missing directory gets: RFC 4918 says 409; nginx without
#: ``create_full_put_path`` answers 500.
_NO_PARENT = (409, 500)
_AUTH = (401, 403)


@dataclass(frozen=True, slots=True)
class Reply:
    """The status line of an answer; the body is read and dropped."""

    status: int
    reason: str


class NoReply(Exception):
    """The server gave no HTTP answer: refused, reset, DNS, TLS, timeout."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


def _spool_chunks(spool: BinaryIO, size: int) -> Iterator[bytes]:
    """The spool's first ``size`` bytes, from the start, in large chunks.

    An iterable body with a Content-Length makes http.client send each chunk
    as is (it reads file bodies 8 KiB at a time).
    """
    spool.seek(0)
    left = size
    while left:
        data = spool.read(min(_CHUNK, left))
        if not data:
            raise OSError(f"spool file ended {left} bytes early")
        left -= len(data)
        yield data


def send(
    wh: HTTPWarehouse,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    spool: BinaryIO | None = None,
    size: int = 0,
) -> Reply:
    """One request; any HTTP status is returned, only a missing answer raises ``NoReply``."""
    request = wh.request(target, method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if spool is not None:
        request.data = _spool_chunks(spool, size)
        request.add_header("Content-Length", str(size))
        request.add_header("Content-Type", "application/octet-stream")
    try:
        response = wh.urlopen(request)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the connection
        return Reply(exc.code, str(exc.reason))
    except WarehouseError as exc:  # stalled, or slower than the minimum rate
        raise NoReply(exc) from exc
    except urllib.error.URLError as exc:
        raise NoReply(exc.reason) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise NoReply(repr(exc)) from exc
    except ValueError as exc:  # http.client.InvalidURL: a bad port, say
        raise UsageError(f"invalid warehouse URL {redact(wh.url)!r}: {exc}") from exc
    with response:
        return Reply(response.status, str(response.reason))


def unwritable(
    wh: HTTPWarehouse, method: str, target: str, got: Reply | NoReply
) -> WarehouseError:
    """WAREHOUSE_UNWRITABLE for ``method target`` that got ``got``, with a hint where one helps."""
    prefix = f"cannot save to warehouse {redact(wh.url)}: {method} {target}"
    if isinstance(got, NoReply):
        return WarehouseError(
            f"{prefix}: {got.reason}",
            category=Category.WAREHOUSE_UNWRITABLE,
            hint="check that the server is up and the URL is right",
        )
    status = f"HTTP {got.status} {got.reason}".rstrip()
    hint = None
    if got.status in _AUTH:
        with_user = wh.authorization is not None
        return WarehouseError(
            f"{prefix}: authorization failed ({status})",
            category=Category.WAREHOUSE_UNWRITABLE,
            hint="check the user and password in the URL"
            if with_user
            else "give credentials in the URL: https://user:password@host/...",
        )
    if got.status in _NO_MOVE:
        hint = (
            f"the server does not accept {method} here; enable WebDAV writes"
            " (nginx: dav_methods PUT DELETE MKCOL MOVE; see docs/warehouses.md)"
        )
    elif got.status == 413:
        hint = "the ware is larger than the server accepts (nginx: client_max_body_size 0)"
    elif 300 <= got.status < 400:
        hint = "the server redirects writes: use the URL it redirects to"
    elif got.status == 409:
        hint = "the directory does not exist on the server: create it first"
    return WarehouseError(f"{prefix}: {status}", category=Category.WAREHOUSE_UNWRITABLE, hint=hint)


def _call(
    wh: HTTPWarehouse,
    method: str,
    target: str,
    *,
    headers: dict[str, str] | None = None,
    spool: BinaryIO | None = None,
    size: int = 0,
) -> Reply:
    """``send``, with no answer at all turned into WAREHOUSE_UNWRITABLE."""
    try:
        return send(wh, method, target, headers=headers, spool=spool, size=size)
    except NoReply as exc:
        raise unwritable(wh, method, target, exc) from exc


def temp_url(final: str) -> str:
    """``<dir>/.<name>.tmp-<random>`` beside ``final``, keeping its query."""
    parts = urlsplit(final)
    head, name = posixpath.split(parts.path)
    path = posixpath.join(head, f".{name}{TEMP_MARK}{secrets.token_hex(8)}")
    return urlunsplit(parts._replace(path=path))


class HTTPSave(SaveSession):
    """A local spool, uploaded on ``commit``; see the module docstring."""

    def __init__(self, wh: HTTPWarehouse, spool: BinaryIO) -> None:
        self.wh = wh
        self.file = spool
        #: The temp upload that exists on the server (to delete), if any.
        self.temp: str | None = None
        self._committed = False

    def commit(self, ware: WareID) -> None:
        if self._committed:
            raise RepeatrError(f"ware {ware} was already committed to {redact(self.wh.url)}")
        wh = self.wh
        final = wh.ware_url(ware)
        try:
            self.file.flush()
            size = self.file.seek(0, 2)
        except OSError as exc:
            raise WarehouseError(
                f"cannot save to warehouse {redact(wh.url)}:"
                f" local spool file: {exc.strerror or exc}",
                category=Category.WAREHOUSE_UNWRITABLE,
            ) from exc
        if wh.content_addressed and self._present(final):
            self._committed = True
            return
        temp = temp_url(final)
        try:
            self.temp = temp  # from the first byte sent: a reset PUT may leave a file
            self._put(temp, size, ware)
            self._move(temp, final, size)
        except BaseException:
            self._delete_temp()
            raise
        self._committed = True

    def _present(self, final: str) -> bool:
        """Whether a ``ca+`` warehouse already has the ware (only a 2xx says yes).

        401 fails at once (the PUT would be refused too); 403 does not: S3-style
        stores answer it for a missing object the client may not list, and the
        PUT will say whether writing is allowed.
        """
        reply = _call(self.wh, "HEAD", final)
        if reply.status == 401:
            raise unwritable(self.wh, "HEAD", final, reply)
        return 200 <= reply.status < 300

    def _put(self, target: str, size: int, ware: WareID | None) -> None:
        """PUT the spool to ``target``; for ``ca+`` temp uploads, MKCOL the shards on failure."""
        wh = self.wh
        try:
            got: Reply | NoReply = send(wh, "PUT", target, spool=self.file, size=size)
        except NoReply as exc:
            got = exc
        if isinstance(got, Reply) and 200 <= got.status < 300:
            return
        missing_parent = isinstance(got, NoReply) or got.status in _NO_PARENT
        if ware is not None and wh.content_addressed and missing_parent and self._mkcol(ware):
            got = _call(wh, "PUT", target, spool=self.file, size=size)
            if 200 <= got.status < 300:
                return
        raise unwritable(wh, "PUT", target, got) from (got if isinstance(got, NoReply) else None)

    def _mkcol(self, ware: WareID) -> bool:
        """MKCOL the two shard directories of ``ware``; True if any was created."""
        first, second, _ = ca_segments(ware)
        created = False
        for segments in ((first,), (first, second)):
            # A trailing slash: nginx creates collections only for "dir/".
            url = urlsplit(self.wh.base_url(*segments))
            target = urlunsplit(url._replace(path=url.path + "/"))
            try:
                reply = send(self.wh, "MKCOL", target)
            except NoReply:
                return False
            if reply.status == 201:
                created = True
            elif reply.status != 405:  # 405: it exists (or MKCOL is not allowed)
                return False
        return created

    def _move(self, temp: str, final: str, size: int) -> None:
        """MOVE ``temp`` to ``final``; without MOVE, PUT ``final`` and DELETE ``temp``."""
        wh = self.wh
        destination = urlunsplit(urlsplit(final)._replace(query=""))
        overwrite = "F" if wh.content_addressed else "T"
        reply = _call(
            wh, "MOVE", temp, headers={"Destination": destination, "Overwrite": overwrite}
        )
        if reply.status in _MOVED:
            self.temp = None
            return
        if wh.content_addressed and reply.status == 412:
            # Overwrite: F and the ware is there: someone saved it meanwhile.
            self._delete_temp()
            return
        if reply.status in _NO_MOVE:
            self._put(final, size, None)
            self._delete_temp()
            return
        raise unwritable(wh, "MOVE", temp, reply)

    def _delete_temp(self) -> None:
        """Best effort: the save has succeeded or failed already, a stray temp file is harmless."""
        temp, self.temp = self.temp, None
        if temp is not None:
            with contextlib.suppress(NoReply, UsageError):
                send(self.wh, "DELETE", temp)

    def discard(self) -> None:
        """On leaving the context: close (and so delete) the spool, DELETE any temp upload."""
        try:
            if not self._committed:
                self._delete_temp()
        finally:
            self.file.close()


@contextlib.contextmanager
def http_save(wh: HTTPWarehouse) -> Iterator[HTTPSave]:
    """Check the server answers, make the spool, yield the session; clean up on the way out."""
    if wh.content_addressed:
        probe = wh.base_url()
    else:
        probe = wh.file_url()
        if not posixpath.basename(urlsplit(probe).path):
            raise UsageError(
                f"cannot save to {redact(wh.url)}: the URL names a directory, not a ware file",
                hint="name a file (https://host/dir/ware.tgz) or use ca+http(s):// for a directory",
            )
    reply = _call(wh, "OPTIONS", probe)
    if reply.status == 401:
        raise unwritable(wh, "OPTIONS", probe, reply)
    try:
        # Closed by HTTPSave.discard in the ``finally`` below.
        spool = tempfile.TemporaryFile(prefix="repeatr-spool-")  # noqa: SIM115
    except OSError as exc:
        raise WarehouseError(
            f"cannot save to warehouse {redact(wh.url)}: cannot create a spool file in"
            f" {tempfile.gettempdir()}: {exc.strerror or exc}",
            category=Category.WAREHOUSE_UNWRITABLE,
            hint="set TMPDIR to a directory with room for the ware",
        ) from exc
    session = HTTPSave(wh, spool)
    try:
        yield session
    finally:
        session.discard()
