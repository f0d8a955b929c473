"""Reading archives: any of gzip, bzip2, xz, zstd or plain tar, as a stream of entries.

``read_archive(stream)`` is a context manager giving an iterator of
:class:`Member`: the cleaned :class:`~repeatr.fileset.entry.Entry` and, for
files, the content as blocks. It reads the stream once, front to back, so it
works on pipes and HTTP bodies.

How: compression is undone by :mod:`repeatr.fileset.compression` (isal on a
second thread for gzip); libarchive parses the plain tar (ustar, pax, GNU
long names, base-256 numbers, sparse files). We bind the few libarchive calls
we need directly with ctypes on our own ``CDLL`` handle instead of going
through libarchive-c's ``ArchiveEntry`` properties: those decode every
path twice and cost ~30 ctypes calls per entry, which dominated reading a
20k-file ware. Our own handle also keeps our ``argtypes`` from clashing with
libarchive-c's.

Name rules (compat.md "Reading a tar"): names are cleaned like Go's
``path.Clean`` (``./x`` equals ``x``, ``a//b`` equals ``a/b``, trailing
``/`` dropped, the root is ``"."``); an absolute name, or one that still
climbs out with ``..`` after cleaning, is a corrupt ware
(``FilesetError(WARE_CORRUPT)`` naming the member). Hardlink targets are
cleaned the same way. PAX global headers are consumed by libarchive and
never appear as members.

Errors: libarchive failures, decompression errors and truncation become
``FilesetError(WARE_CORRUPT)`` with the original as ``__cause__``. An input
that is not an archive at all (e.g. an HTML error page) is corrupt too.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import lzma
import posixpath
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from ctypes import (
    CFUNCTYPE,
    POINTER,
    byref,
    c_char_p,
    c_int,
    c_int64,
    c_long,
    c_size_t,
    c_ssize_t,
    c_uint,
    c_uint64,
    c_void_p,
)
from typing import Any, BinaryIO

from repeatr.errors import Category, FilesetError, RepeatrError
from repeatr.fileset.compression import BLOCK, open_decompressed
from repeatr.fileset.entry import Entry, EntryType

__all__ = ["Member", "clean_name", "read_archive"]

Buffer = bytes | memoryview

# --- libarchive bindings (archive.h, archive_entry.h) -----------------------

ARCHIVE_EOF = 1
ARCHIVE_OK = 0
ARCHIVE_WARN = -20
ARCHIVE_FATAL = -30

# archive_entry.h AE_IF* (same values as <sys/stat.h> S_IF*)
_AE_IFMT = 0o170000
_AE_IFREG = 0o100000
_AE_IFDIR = 0o040000
_AE_IFLNK = 0o120000
_AE_IFIFO = 0o010000
_AE_IFCHR = 0o020000
_AE_IFBLK = 0o060000
_AE_IFSOCK = 0o140000

_TYPES = {
    _AE_IFREG: EntryType.FILE,
    _AE_IFDIR: EntryType.DIR,
    _AE_IFLNK: EntryType.SYMLINK,
    _AE_IFIFO: EntryType.FIFO,
    _AE_IFCHR: EntryType.CHAR,
    _AE_IFBLK: EntryType.BLOCK,
    _AE_IFSOCK: EntryType.SOCKET,
}

_READ_CB = CFUNCTYPE(c_ssize_t, c_void_p, c_void_p, POINTER(c_void_p))


def _load() -> ctypes.CDLL:
    from libarchive import ffi as _ffi  # finds the library the way libarchive-c does

    # PyDLL: keep the GIL across these short calls. A CDLL releases and
    # re-takes it on every call, ~15 per entry, and each re-take waits on the
    # gzip thread: measured slower on two cores. libarchive does no I/O of
    # its own here (it reads through our callback), so nothing blocks.
    return ctypes.PyDLL(_ffi.libarchive_path)


_lib = _load()


def _fn(name: str, argtypes: list[Any], restype: Any) -> Any:
    f = getattr(_lib, name)
    f.argtypes = argtypes
    f.restype = restype
    return f


_read_new = _fn("archive_read_new", [], c_void_p)
_read_free = _fn("archive_read_free", [c_void_p], c_int)
_support_tar = _fn("archive_read_support_format_tar", [c_void_p], c_int)

_read_open = _fn(
    "archive_read_open", [c_void_p, c_void_p, c_void_p, _READ_CB, c_void_p], c_int
)
_next_header = _fn("archive_read_next_header", [c_void_p, POINTER(c_void_p)], c_int)
_data_block = _fn(
    "archive_read_data_block",
    [c_void_p, POINTER(c_void_p), POINTER(c_size_t), POINTER(c_int64)],
    c_int,
)
_error_string = _fn("archive_error_string", [c_void_p], c_char_p)
_e_pathname = _fn("archive_entry_pathname", [c_void_p], c_char_p)
_e_pathname_utf8 = _fn("archive_entry_pathname_utf8", [c_void_p], c_char_p)
_e_filetype = _fn("archive_entry_filetype", [c_void_p], c_uint)
_e_perm = _fn("archive_entry_perm", [c_void_p], c_uint)
_e_uid = _fn("archive_entry_uid", [c_void_p], c_int64)
_e_gid = _fn("archive_entry_gid", [c_void_p], c_int64)
_e_mtime = _fn("archive_entry_mtime", [c_void_p], c_int64)
_e_mtime_nsec = _fn("archive_entry_mtime_nsec", [c_void_p], c_long)
_e_symlink = _fn("archive_entry_symlink", [c_void_p], c_char_p)
_e_hardlink = _fn("archive_entry_hardlink", [c_void_p], c_char_p)
_e_rdevmajor = _fn("archive_entry_rdevmajor", [c_void_p], c_uint64)
_e_rdevminor = _fn("archive_entry_rdevminor", [c_void_p], c_uint64)
_e_size = _fn("archive_entry_size", [c_void_p], c_int64)
_e_xattr_count = _fn("archive_entry_xattr_count", [c_void_p], c_int)
_e_xattr_reset = _fn("archive_entry_xattr_reset", [c_void_p], c_int)
_e_xattr_next = _fn(
    "archive_entry_xattr_next",
    [c_void_p, POINTER(c_char_p), POINTER(c_void_p), POINTER(c_size_t)],
    c_int,
)

_string_at = ctypes.string_at
# A memoryview over C memory without a copy and without creating a ctypes
# array type per block size (that costs ~20 us each).
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.argtypes = [c_void_p, ctypes.c_ssize_t, c_int]
_memory_view.restype = ctypes.py_object
_PyBUF_READ = 0x100


# --- names ------------------------------------------------------------------


def clean_name(raw: str, what: str = "member") -> str:
    """Clean an archive path: ``./a//b/`` -> ``a/b``, ``./`` -> ``.``.

    Raises ``FilesetError(WARE_CORRUPT)`` for empty or absolute names and for
    names that climb out of the fileset with ``..``.
    """
    if not raw:
        raise FilesetError(f"archive {what} with an empty name", category=Category.WARE_CORRUPT)
    if raw.startswith("/"):
        raise FilesetError(
            f"archive {what} {raw!r} has an absolute name", category=Category.WARE_CORRUPT
        )
    # Fast path: the common "./dir/file" or "dir/file" with nothing to fold.
    name = raw[2:] if raw.startswith("./") else raw
    if name.endswith("/"):
        name = name.rstrip("/")
    if not name:
        return "."
    if "//" in name or "/./" in name or "/." in name or name.startswith(".") or "\0" in name:
        if "\0" in name:
            raise FilesetError(
                f"archive {what} {raw!r} has a NUL in its name", category=Category.WARE_CORRUPT
            )
        name = posixpath.normpath(name)
        if name.startswith("//"):  # normpath keeps a leading "//"
            name = name.lstrip("/")
        if name == ".." or name.startswith("../"):
            raise FilesetError(
                f"archive {what} {raw!r} escapes the fileset with '..'",
                category=Category.WARE_CORRUPT,
            )
    return name


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# --- members ----------------------------------------------------------------


class Member:
    """One archive entry; ``blocks()`` streams a FILE's content.

    Valid only until the iterator moves on: libarchive reuses its buffers,
    and skipping unread content is done by the next header read.
    """

    __slots__ = ("_gen", "_reader", "entry")

    def __init__(self, reader: _ArchiveReader, gen: int, entry: Entry) -> None:
        self._reader = reader
        self._gen = gen
        self.entry = entry

    def blocks(self) -> Iterator[bytes]:
        """The content of a FILE entry, in chunks of up to ~1 MiB; empty otherwise."""
        if self.entry.type is not EntryType.FILE:
            return iter(())
        return self._reader.data_blocks(  # type: ignore[return-value]
            self._gen, self.entry.name, self.entry.size, True
        )

    def views(self) -> Iterator[memoryview]:
        """Like :meth:`blocks` without the copy: each memoryview points into
        libarchive's buffer and is valid only until the next one is taken.
        For consumers that hash or ``os.write`` a block and drop it."""
        if self.entry.type is not EntryType.FILE:
            return iter(())
        return self._reader.data_blocks(  # type: ignore[return-value]
            self._gen, self.entry.name, self.entry.size, False
        )

    def read_digest(self) -> bytes:
        """Consume the content and return its SHA-384 (``sha384(b"")`` for non-files)."""
        h = hashlib.sha384()
        for view in self.views():
            h.update(view)
        return h.digest()

    def __repr__(self) -> str:
        return f"Member({self.entry!r})"


class _ArchiveReader:
    """Owns one libarchive read handle fed from a Python stream."""

    def __init__(self, plain: io.BufferedIOBase) -> None:
        self._plain = plain
        self._buf = ctypes.create_string_buffer(BLOCK)
        self._buf_p = ctypes.cast(self._buf, c_void_p).value
        self._view = memoryview(self._buf).cast("B")
        self._callback_error: BaseException | None = None
        self._gen = 0
        self._a: int | None = _read_new()
        if not self._a:
            raise MemoryError("archive_read_new failed")
        self._read_cb = _READ_CB(self._on_read)  # keep alive as long as the handle
        _support_tar(self._a)

        self._check(
            _read_open(self._a, None, None, self._read_cb, None), "reading its first entry"
        )

    def _on_read(self, _a: int, _ctx: int, out: Any) -> int:
        # Called by libarchive; an exception must not escape into C.
        try:
            n = self._plain.readinto(self._view)
        except BaseException as exc:  # re-raised by _fail, after libarchive returns
            self._callback_error = exc
            return -1
        out[0] = self._buf_p
        return n or 0

    def _fail(self, doing: str) -> FilesetError:
        cause = self._callback_error
        if cause is not None:
            self._callback_error = None
            if isinstance(cause, RepeatrError) or not isinstance(cause, Exception):
                # The source's own error (a download that broke off or stalled:
                # the warehouse's category, not a corrupt ware), or a cancel.
                raise cause
            err = FilesetError(
                f"corrupt ware: {doing}: {_describe(cause)}", category=Category.WARE_CORRUPT
            )
            err.__cause__ = cause
            return err
        msg = _error_string(self._a) if self._a else None
        text = _decode(msg) if msg else "unknown libarchive error"
        return FilesetError(f"corrupt ware: {doing}: {text}", category=Category.WARE_CORRUPT)

    def _check(self, rc: int, doing: str) -> int:
        if rc < ARCHIVE_WARN or (rc != ARCHIVE_OK and self._callback_error is not None):
            raise self._fail(doing)
        return rc

    def close(self) -> None:
        if self._a:
            _read_free(self._a)
            self._a = None

    def members(self) -> Iterator[Member]:
        a = self._a
        entry_p = c_void_p()
        ref = byref(entry_p)
        types = _TYPES
        file_t = EntryType.FILE
        hardlink_t = EntryType.HARDLINK
        symlink_t = EntryType.SYMLINK
        count = 0
        while True:
            rc = _next_header(a, ref)
            if rc == ARCHIVE_EOF:
                if self._callback_error is not None:
                    raise self._fail("reading past the last entry")
                return
            if rc != ARCHIVE_OK:
                self._check(rc, f"reading the header after entry {count}")
                # ARCHIVE_WARN: the header was read (e.g. an unknown pax key); go on.
            count += 1
            self._gen += 1
            e = entry_p.value
            if e is None:  # pragma: no cover - libarchive returned OK without an entry
                raise FilesetError("libarchive returned no entry", category=Category.INTERNAL)
            raw = _e_pathname(e) or _e_pathname_utf8(e)
            if raw is None:
                raise FilesetError(
                    f"archive entry {count} has no name", category=Category.WARE_CORRUPT
                )
            raw_name = _decode(raw)
            name = clean_name(raw_name)
            hard = _e_hardlink(e)
            linkname = ""
            if hard is not None:
                etype = hardlink_t
                linkname = clean_name(_decode(hard), f"hardlink target of {raw_name!r}:")
            else:
                ftype = _e_filetype(e) & _AE_IFMT
                etype_or_none = types.get(ftype)
                if etype_or_none is None:
                    raise FilesetError(
                        f"archive member {raw_name!r} has unknown file type {ftype:#o}",
                        category=Category.WARE_CORRUPT,
                    )
                etype = etype_or_none
                if etype is symlink_t:
                    target = _e_symlink(e)
                    linkname = _decode(target) if target else ""
            entry = Entry(
                name=name,
                type=etype,
                mode=_e_perm(e) & 0o7777,
                uid=_e_uid(e),
                gid=_e_gid(e),
                mtime=_e_mtime(e),
                mtime_ns=_e_mtime_nsec(e),
                linkname=linkname,
                size=_e_size(e) if etype is file_t else 0,
            )
            if etype is EntryType.CHAR or etype is EntryType.BLOCK:
                entry.devmajor = _e_rdevmajor(e)
                entry.devminor = _e_rdevminor(e)
            if _e_xattr_count(e):
                entry.xattrs = _xattrs(e)
            if name == "." and etype is not EntryType.DIR and etype is not file_t:
                raise FilesetError(
                    f"archive member {raw_name!r} names the root but is not a directory"
                    " or a file",
                    category=Category.WARE_CORRUPT,
                )
            yield Member(self, self._gen, entry)

    def data_blocks(self, gen: int, name: str, size: int, copy: bool) -> Iterator[Buffer]:
        """Content blocks: ``bytes`` copies, or (``copy=False``) memoryviews of
        libarchive's buffer that are only valid until the next block is read."""
        if gen != self._gen:
            raise RuntimeError(f"content of {name!r} read after moving to the next member")
        a = self._a
        if a is None:
            raise RuntimeError(f"content of {name!r} read after the archive was closed")
        buf = c_void_p()
        nbytes = c_size_t()
        offset = c_int64()
        refs = (byref(buf), byref(nbytes), byref(offset))
        position = 0
        string_at = _string_at
        view_of = _memory_view
        while True:
            rc = _data_block(a, *refs)
            if rc == ARCHIVE_EOF:
                if self._callback_error is not None:
                    raise self._fail(f"reading the content of {name!r}")
                # a sparse file may end in a hole
                yield from _zeros(size - position)
                return
            if rc != ARCHIVE_OK:
                self._check(rc, f"reading the content of {name!r}")
            if gen != self._gen:  # pragma: no cover - guarded above
                raise RuntimeError(f"content of {name!r} read after moving on")
            off = offset.value
            if off > position:  # a hole in a sparse file
                yield from _zeros(off - position)
                position = off
            n = nbytes.value
            if n:
                position += n
                if copy:
                    yield string_at(buf.value or 0, n)
                else:
                    yield view_of(buf.value, n, _PyBUF_READ)


def _zeros(count: int) -> Iterator[bytes]:
    while count > 0:
        step = min(count, BLOCK)
        yield bytes(step)
        count -= step


def _xattrs(e: int) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    name = c_char_p()
    value = c_void_p()
    size = c_size_t()
    _e_xattr_reset(e)
    while _e_xattr_next(e, byref(name), byref(value), byref(size)) == ARCHIVE_OK:
        if name.value is None:
            break
        out[_decode(name.value)] = _string_at(value.value or 0, size.value) if size.value else b""
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return f"truncated stream ({exc})"
    if isinstance(exc, lzma.LZMAError):
        return f"bad xz data ({exc})"
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def read_archive(stream: BinaryIO) -> Iterator[Iterator[Member]]:
    """Open ``stream`` (compression detected from its first bytes) as members.

    Raises ``FilesetError(WARE_CORRUPT)`` for malformed, truncated or
    non-tar input and for unsafe names. ``stream`` is not closed.
    """
    try:
        _kind, plain = open_decompressed(stream)
    except (OSError, EOFError, ValueError) as exc:
        raise FilesetError(
            f"corrupt ware: cannot read its header: {_describe(exc)}",
            category=Category.WARE_CORRUPT,
        ) from exc
    try:
        reader = _ArchiveReader(plain)
        try:
            yield reader.members()
        finally:
            reader.close()
    finally:
        _close_quietly(plain.close)


def _close_quietly(close: Callable[[], None]) -> None:
    """Close a decompressor we stopped reading early; its errors are moot then."""
    with suppress(OSError, EOFError, ValueError, lzma.LZMAError):
        close()
