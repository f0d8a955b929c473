"""Compression around tar streams: detect it from magic bytes, undo it, write gzip.

Why decompress here rather than let libarchive do it: isal's igzip inflates
gzip 2-3x faster than zlib, and its threaded reader does it on a second core
while the caller parses and hashes, so reading a ``.tgz`` costs little more
than reading a plain tar. The other formats use the standard modules (which
release the GIL while working) or ``zstandard``. libarchive then only ever
sees plain tar.

Writing is always gzip (the ``tar`` packtype's ware format): isal at a fast
level in a background thread; the output is a standard single-member gzip
that ``gzip -d`` and the original's Go reader accept.
"""

from __future__ import annotations

import bz2
import io
import lzma
from enum import StrEnum
from typing import BinaryIO, cast

from isal import igzip_threaded

__all__ = ["Compression", "detect", "open_decompressed", "open_gzip_writer", "peek_head"]

#: isal levels are 0-3; 1 is about as fast as `gzip -1` is slow, and still
#: compresses text and binaries well. Part of no hash: changing it changes
#: ware bytes but never IDs.
GZIP_LEVEL = 1
BLOCK = 1 << 20


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
        rest = self._rest
        readinto = getattr(rest, "readinto", None)
        if readinto is not None:
            return cast(int, readinto(buffer))
        data = rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
    decompressor's own exceptions (``OSError``, ``EOFError``, ``lzma.LZMAError``,
    ``zstandard.ZstdError``): the tar reader translates them.
    """
    head, joined = peek_head(stream)
    kind = detect(head)
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


def open_gzip_writer(out: BinaryIO) -> BinaryIO:
    """A writer that gzips into ``out`` (which it does not close) in a background thread."""
    writer = igzip_threaded.open(  # type: ignore[no-untyped-call]
        out, "wb", compresslevel=GZIP_LEVEL, threads=1, block_size=BLOCK
    )
    return cast(BinaryIO, writer)
