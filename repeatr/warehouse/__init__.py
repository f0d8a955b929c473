"""Warehouses: where wares are fetched from and saved to, named by URL.

A warehouse is either a single ware file (``file://``, ``http(s)://``: the
URL *is* the ware) or a content-addressed store (``ca+file://``,
``ca+http(s)://``: the ware lives under its hash). The URL forms follow the
original rio (``warehouse/impl/kvfs``, ``kvhttp``) so warehouses written by
either implementation are read by the other; see docs/warehouses.md.

Everything here blocks (disk and network I/O): async callers run it through
``anyio.to_thread.run_sync``.

CONTRACT:

class Warehouse(ABC):
    url: str
    def open_ware(self, ware: WareID) -> ContextManager[BinaryIO]
        Raises WarehouseError: WARE_NOT_FOUND when the warehouse answered
        but has no such ware, WAREHOUSE_UNAVAILABLE when it could not be
        reached/read.
    def open_file(self) -> ContextManager[BinaryIO]
        Single-ware kinds only (file://, http(s)://): the ware, whatever its ID.
    content_addressed: bool      # ca+ kinds: presence proves content
    def start_save(self) -> ContextManager[SaveSession]
        SaveSession.file: a writable binary file (a temp file inside the
        target, or a spool for HTTP); SaveSession.commit(ware: WareID) puts
        it into place (rename) - call only after the hash is verified;
        leaving the context without commit removes the temp file.
        Raises WarehouseError(WAREHOUSE_UNWRITABLE) for read-only kinds.

def warehouse_for(url: str, *, checkpoint=None) -> Warehouse   # UsageError for unknown schemes
    ``checkpoint`` (e.g. ``anyio.from_thread.check_cancelled``) is called
    whenever a network transfer would wait; what it raises stops it.
def open_single_ware(source: str) -> ContextManager[BinaryIO]
    A plain path or a single-ware URL (file://, http(s)://), for ``scan``.
def open_from_sources(ware: WareID, urls: Sequence[str], *, checkpoint=None)
        -> ContextManager[tuple[str, BinaryIO]]
    Tries in order; not-found / unavailable moves on. The final error is
    WARE_NOT_FOUND if every source answered "not there", else
    WAREHOUSE_UNAVAILABLE; its message lists every source and what it said.
"""

from __future__ import annotations

import contextlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit, urlunsplit

from repeatr.errors import Category, UsageError, WarehouseError
from repeatr.model.wareid import WareID

#: Every scheme ``warehouse_for`` understands, in the order error messages list them.
SCHEMES = ("file", "ca+file", "http", "https", "ca+http", "ca+https")

#: Categories after which ``open_from_sources`` moves on to the next source.
#: Anything else (a usage error, a bug) stops the search: trying more
#: warehouses would only hide it.
_MOVE_ON = (Category.WARE_NOT_FOUND, Category.WAREHOUSE_UNAVAILABLE)


class SaveSession(ABC):
    """One ware being written into a warehouse: write ``file``, then ``commit``.

    Nothing is visible at the final location until ``commit``, so a reader
    never sees a half-written or unverified ware.
    """

    file: BinaryIO

    @abstractmethod
    def commit(self, ware: WareID) -> None:
        """Put the written bytes in place as ``ware``; only after the hash is verified."""


class Warehouse(ABC):
    """One warehouse, named by the URL the user gave (kept as-is for messages).

    ``content_addressed`` is true for the ``ca+`` kinds: there a ware's
    presence proves its content (it can only sit under its own hash), while
    a single-file warehouse may hold any ware, so callers must hash it.
    """

    content_addressed: bool = False

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    def open_ware(self, ware: WareID) -> AbstractContextManager[BinaryIO]:
        """Open ``ware`` for reading (a stream of the ware's bytes, e.g. a .tgz).

        WARE_NOT_FOUND: the warehouse answered and has no such ware.
        WAREHOUSE_UNAVAILABLE: the warehouse could not be reached or read.
        """

    @abstractmethod
    def start_save(self) -> AbstractContextManager[SaveSession]:
        """Start writing one ware; leaving without ``commit`` leaves no trace.

        WAREHOUSE_UNWRITABLE for read-only kinds or when no temp file can be made.
        """

    def open_file(self) -> AbstractContextManager[BinaryIO]:
        """Open the one ware a single-ware warehouse holds, whatever its ID.

        UsageError for content-addressed kinds, which need a ware ID.
        """
        raise UsageError(
            f"{redact(self.url)} is a content-addressed warehouse: name a ware ID,"
            " or give a single ware as a path, file:// or http(s):// URL"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{7,}")


def ca_segments(ware: WareID) -> tuple[str, str, str]:
    """The path segments of ``ware`` in a content-addressed warehouse.

    ``<hash[0:3]>/<hash[3:6]>/<hash>`` (rio ``ChunkifyHash``): two levels of
    about 195,000 shards keep directories small. The packtype is not part of
    the path. The hash is checked to be plain base58 so that a hand-built
    ``WareID`` can never name a path outside the warehouse.
    """
    if ware.is_empty:
        raise UsageError(
            f"the empty ware {ware} has no content to store in or fetch from a warehouse"
        )
    if not _BASE58.fullmatch(ware.hash):
        raise UsageError(f"invalid ware ID {str(ware)!r}: the hash is not base58")
    return ware.hash[0:3], ware.hash[3:6], ware.hash


def redact(url: str) -> str:
    """The URL with any password replaced, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def warehouse_for(url: str, *, checkpoint: Callable[[], None] | None = None) -> Warehouse:
    """The warehouse a URL names; ``UsageError`` for an unknown scheme or an empty path.

    Kinds are imported lazily so that reading a local file never loads the
    HTTP machinery.
    """
    try:
        scheme = urlsplit(url).scheme
    except ValueError as exc:  # e.g. an unclosed "[" in an IPv6 host
        raise UsageError(f"invalid warehouse URL {url!r}: {exc}") from None
    if scheme in ("file", "ca+file"):
        if scheme == "file":
            from repeatr.warehouse.file import FileWarehouse

            return FileWarehouse(url)
        from repeatr.warehouse.cafile import CAFileWarehouse

        return CAFileWarehouse(url)
    if scheme in ("http", "https", "ca+http", "ca+https"):
        from repeatr.warehouse.http import HTTPWarehouse

        return HTTPWarehouse(url, checkpoint=checkpoint)
    got = f"scheme {scheme!r}" if scheme else "no scheme"
    raise UsageError(
        f"unsupported warehouse URL {redact(url)!r}: {got}",
        hint="use one of " + ", ".join(f"{s}://" for s in SCHEMES),
    )


def open_single_ware(source: str) -> AbstractContextManager[BinaryIO]:
    """Open an archive named by a plain path or a single-ware URL (``file://``, ``http(s)://``).

    For commands such as ``scan`` that read one archive without knowing its
    ID. A plain path (no ``://``) is a local file; ``ca+`` URLs are a
    UsageError, since without an ID there is nothing to look up.
    """
    if "://" not in source:
        from repeatr.warehouse.file import FileWarehouse

        return FileWarehouse(Path(os.path.abspath(source)).as_uri()).open_file()
    return warehouse_for(source).open_file()


@contextlib.contextmanager
def open_from_sources(
    ware: WareID, urls: Sequence[str], *, checkpoint: Callable[[], None] | None = None
) -> Iterator[tuple[str, BinaryIO]]:
    """Open ``ware`` from the first source that has it; yields ``(url, stream)``.

    Sources are tried in order (compat.md "Warehouses"); a source that is
    unreachable or lacks the ware moves on. Every URL is parsed before any is
    tried, so a typo in the last one fails fast instead of after a slow
    download attempt. The final error is WARE_NOT_FOUND only if every source
    said "not there": if any could not be asked, the ware may well exist, and
    "unavailable" tells the user to retry rather than to re-pack.
    """
    if not urls:
        raise UsageError(f"no sources to fetch {ware} from", hint="add a fetch URL")
    warehouses = [warehouse_for(url, checkpoint=checkpoint) for url in urls]
    said: list[tuple[str, WarehouseError]] = []
    for wh in warehouses:
        with contextlib.ExitStack() as stack:
            try:
                stream = stack.enter_context(wh.open_ware(ware))
            except WarehouseError as exc:
                if exc.category not in _MOVE_ON:
                    raise
                said.append((wh.url, exc))
                continue
            # Outside the ``try``: an error in the caller's body is theirs,
            # not a reason to try the next source.
            yield wh.url, stream
            return
    all_missing = all(exc.category is Category.WARE_NOT_FOUND for _, exc in said)
    lines = "; ".join(f"{redact(url)}: {exc}" for url, exc in said)
    if all_missing:
        raise WarehouseError(
            f"ware {ware} not found in any of {len(said)} source(s): {lines}",
            category=Category.WARE_NOT_FOUND,
        )
    raise WarehouseError(
        f"could not fetch ware {ware}: {lines}",
        category=Category.WAREHOUSE_UNAVAILABLE,
        hint="check the unavailable warehouses and retry",
    )
