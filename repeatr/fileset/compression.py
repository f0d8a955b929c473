"""Compression around tar streams: detect it from magic bytes, undo it, write gzip.

Why decompress here rather than let libarchive do it: isal's igzip inflates
gzip 2-3x faster than zlib, and its threaded reader does it on a second core
while the caller parses and hashes, so reading a ``.tgz`` costs little more
than reading a plain tar. The other formats use the standard modules (which
release the GIL while working) or ``zstandard``. libarchive then only ever
sees plain tar.

Streams that arrive over time (pipes, sockets, HTTP bodies) are read
differently from regular files: every read returns what the input so far
decompresses to, so a slow download is extracted as it arrives and a
stalled one has delivered everything before the stall. isal's threaded
reader cannot do that: it fills a buffer of 8 MiB of input, and then a
block of 1 MiB of output, before handing anything over. So only regular
files (and in-memory buffers), where reads never wait, take the threaded
path; any other gzip source is inflated in line by isal's ``igzip_lib``
decompressor, fed one source read at a time (about as fast per byte, on
one core: fine for a network-bound stream). The other formats get the same
"at most one source read" wrapping (``read1``) on such streams.

Writing is always gzip (the ``tar`` packtype's ware format): isal at a fast
level, in a background thread once the archive passes one block (a smaller
one is gzipped in line, to the same bytes); the output is a standard
single-member gzip that ``gzip -d`` and the original's Go reader accept.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import stat
from collections.abc import Callable
from enum import StrEnum
from typing import BinaryIO, Protocol, cast

from isal import igzip_lib, igzip_threaded

__all__ = ["Compression", "detect", "open_decompressed", "open_gzip_writer", "peek_head"]

#: isal levels are 0-3; 1 is about as fast as `gzip -1` is slow, and still
#: compresses text and binaries well. Part of no hash: changing it changes
#: ware bytes but never IDs.
GZIP_LEVEL = 1
BLOCK = 1 << 20
#: Largest single read from a stream that arrives over time.
STREAM_READ = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"


_MAGIC = (
    (b"\x1f\x8b", Compression.GZIP),
    (b"BZh", Compression.BZIP2),
    (b"\xfd7zXZ\x00", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
)


def detect(head: bytes) -> Compression:
    """The compression of a stream from its first (up to 6) bytes."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return Compression.NONE


class _Prefixed(io.RawIOBase):
    """A stream with bytes already read from it put back in front."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        # One read of the source: a buffered one's readinto would wait
        # until the whole buffer is filled.
        rest = self._rest
        for method in ("readinto1", "readinto"):
            readinto = getattr(rest, method, None)
            if readinto is not None:
                return cast(int, readinto(buffer))
        read = getattr(rest, "read1", None) or rest.read
        data = read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _HasRead1(Protocol):
    def read1(self, size: int = ..., /) -> bytes: ...
    def readinto1(self, buffer: memoryview, /) -> int: ...
    def close(self) -> None: ...


class _Arrived(io.RawIOBase):
    """Reads of ``reader`` that return what has arrived: at most one read of its source.

    ``BufferedReader.readinto`` (and the decompressing files' ``readinto``)
    loop until the buffer is full; ``read1``/``readinto1`` don't.
    """

    def __init__(self, reader: _HasRead1) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        return self._reader.readinto1(buffer)

    def read(self, size: int = -1) -> bytes:
        return self._reader.read1(size)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class _Gunzip(io.RawIOBase):
    """gzip inflated as it arrives, on the caller's thread.

    Each read takes at most one read of ``source`` and returns as soon as
    that gives any output. Handles what isal's file reader handles:
    several members one after another, zero padding at the end; checks
    each member's CRC and length (``DECOMP_GZIP``). A truncated stream
    raises ``EOFError``, garbage after a member ``OSError``.
    """

    def __init__(self, source: _Arrived) -> None:
        self._source = source
        self._inflate = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        size = len(view)
        if not size or self._done:
            return 0
        while True:
            inflate = self._inflate
            if inflate.eof:
                rest = self._next_member(inflate.unused_data)
                if rest is None:
                    self._done = True
                    return 0
                inflate = self._inflate = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
                chunk = rest
            elif inflate.needs_input:
                chunk = self._source.read(STREAM_READ)
                if not chunk:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
            else:
                chunk = b""
            out = inflate.decompress(chunk, size)
            if out:
                n = len(out)
                view[:n] = out
                return n

    def _next_member(self, rest: bytes) -> bytes | None:
        """The start of the next member after one ended, or None at the end."""
        read = self._source.read
        while True:
            rest = rest.lstrip(b"\0")  # zero padding after a member is allowed
            if len(rest) >= 2:
                if not rest.startswith(_GZIP_MAGIC):
                    raise OSError("not gzip data after the end of a gzip member")
                return rest
            more = read(STREAM_READ)
            if not more:
                if rest:
                    raise EOFError("gzip stream ends in the header of a member")
                return None
            rest += more

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


def _arrives_over_time(stream: BinaryIO) -> bool:
    """False for a regular file or an in-memory buffer: reads that never wait."""
    if isinstance(stream, io.BytesIO):
        return False
    try:
        return not stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no fd (io.UnsupportedOperation is both)
        return True


def peek_head(stream: BinaryIO, size: int = 6) -> tuple[bytes, io.BufferedReader]:
    """Read the first bytes without losing them: (head, stream to read from)."""
    head = b""
    while len(head) < size:
        chunk = stream.read(size - len(head))
        if not chunk:
            break
        head += chunk
    return head, io.BufferedReader(_Prefixed(head, stream), BLOCK)


def open_decompressed(stream: BinaryIO) -> tuple[Compression, io.BufferedIOBase]:
    """Detect the compression of ``stream`` and return a reader of its plain bytes.

    The caller closes the returned reader (it does not close ``stream``).
    Decompression errors surface from its ``read``/``readinto`` as the
    decompressor's own exceptions (``OSError``, ``EOFError``,
    ``igzip_lib.IsalError``, ``lzma.LZMAError``, ``zstandard.ZstdError``):
    the tar reader translates them.

    A source that is not a regular file or a ``BytesIO`` is treated as
    arriving over time: each ``readinto`` then returns what the input read
    so far decompresses to, waiting for the source only when that is
    nothing (see the module docstring).
    """
    head, joined = peek_head(stream)
    kind = detect(head)
    if _arrives_over_time(stream):
        return kind, cast(io.BufferedIOBase, _open_arriving(kind, _Arrived(joined)))
    if kind is Compression.GZIP:
        gz = igzip_threaded.open(  # type: ignore[no-untyped-call]
            joined, "rb", threads=1, block_size=BLOCK
        )
        return kind, cast(io.BufferedIOBase, gz)
    if kind is Compression.BZIP2:
        return kind, bz2.BZ2File(joined, "rb")
    if kind is Compression.XZ:
        return kind, lzma.LZMAFile(joined, "rb")
    if kind is Compression.ZSTD:
        import zstandard  # only needed for zstd wares

        reader = zstandard.ZstdDecompressor().stream_reader(
            joined, read_size=BLOCK, closefd=False, read_across_frames=True
        )
        return kind, io.BufferedReader(reader, BLOCK)
    return kind, joined


def _open_arriving(kind: Compression, source: _Arrived) -> io.RawIOBase:
    if kind is Compression.GZIP:
        return _Gunzip(source)
    src = cast(BinaryIO, source)
    if kind is Compression.BZIP2:
        return _Arrived(bz2.BZ2File(src, "rb"))
    if kind is Compression.XZ:
        return _Arrived(lzma.LZMAFile(src, "rb"))
    if kind is Compression.ZSTD:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(
            src, read_size=STREAM_READ, closefd=False, read_across_frames=True
        )
        return _Arrived(reader)
    return source


def open_gzip_writer(out: BinaryIO) -> BinaryIO:
    """A writer that gzips into ``out`` (which it does not close) in a background thread,
    once more than a block has been written; what stays within one is gzipped in line."""
    return cast(BinaryIO, _GzipWriter(out))


def _threaded_gzip_writer(out: BinaryIO) -> BinaryIO:
    writer = igzip_threaded.open(  # type: ignore[no-untyped-call]
        out, "wb", compresslevel=GZIP_LEVEL, threads=1, block_size=BLOCK
    )
    return cast(BinaryIO, writer)


class _GzipWriter:
    """isal's threaded gzip writer, started only for a stream longer than one block.

    Most outputs a pack writes are small (a log, a few files): starting,
    feeding and joining a thread then cost ~1.5 ms, ten times the gzip
    itself. So writes are kept until they pass ``BLOCK``; then the threaded
    writer starts and gets them all, in the same calls, so its output is
    what it would have been. A stream that ends within the block is written
    here as that writer writes one block (its header, one raw deflate block
    compressed with the same isal compressor and no dictionary, the final
    empty block, the CRC and length): byte for byte the same archive either
    way (``tests/fileset/test_compression.py`` checks it), so a ware's bytes
    never depend on which path wrote them.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._writes: list[bytes] = []
        self._size = 0
        self._threaded: BinaryIO | None = None
        self._closed = False

    def write(self, data: bytes) -> int:
        if self._threaded is not None:
            return self._threaded.write(data)
        self._writes.append(bytes(data))
        self._size += len(data)
        if self._size > BLOCK or _one_block is None:
            self._threaded = _threaded_gzip_writer(self._out)
            writes, self._writes = self._writes, []
            for chunk in writes:
                self._threaded.write(chunk)
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._threaded is not None:
            self._threaded.close()
            return
        if _one_block is None:  # pragma: no cover - an isal without it: no writes came
            _threaded_gzip_writer(self._out).close()
            return
        data = b"".join(self._writes)
        self._writes = []
        self._out.write(_one_block(data))


def _isal_one_block() -> Callable[[bytes], bytes] | None:
    """What isal's threaded writer (one thread) writes for a stream of at most one block;
    None if this isal lacks the compressor it uses (then every stream takes the thread)."""
    import struct

    from isal import isal_zlib

    parallel = getattr(isal_zlib, "_ParallelCompress", None)
    if parallel is None:  # pragma: no cover - isal's private API moved
        return None
    # As igzip_threaded._ThreadedGzipWriter._write_gzip_header packs it.
    header = struct.pack("BBBBIBB", 0x1F, 0x8B, 0x08, 0, 0, 0xFF, 4 if GZIP_LEVEL == 0 else 0)
    end = isal_zlib.compress(b"", wbits=-15)
    no_dict = memoryview(b"")

    def one_block(data: bytes) -> bytes:
        if not data:
            return header + end + struct.pack("<II", 0, 0)
        # The threaded writer's output buffer, sized for this block.
        size = len(data)
        room = 2 * size + 500 if GZIP_LEVEL == 0 else size + max(size // 10, 500)
        compressed, crc = parallel(buffersize=room, level=GZIP_LEVEL).compress_and_crc(
            data, no_dict
        )
        return b"".join((header, compressed, end, struct.pack("<II", crc, size & 0xFFFFFFFF)))

    return one_block


_one_block = _isal_one_block()
