"""Decompression: streams that arrive over time are extracted as they arrive.

A pipe delivers half an archive and then stalls; the entries in that half
must come out during the stall, for every compression. The in-line gzip
reader used for such streams must also agree with isal's file reader on
what is valid gzip (several members, zero padding, CRC, truncation).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zstandard
from isal import igzip

from repeatr.errors import Category, FilesetError
from repeatr.fileset.compression import (
    BLOCK,
    Compression,
    _threaded_gzip_writer,
    open_decompressed,
    open_gzip_writer,
)
from repeatr.fileset.reader import read_archive

#: Long enough for a slow machine; a stream that waits for the stall to end
#: fails the test when it does.
STALL_SECONDS = 20.0
FILES = 64


def _tar(seed: int = 1) -> bytes:
    """FILES members of 32 KiB of random bytes each (so compressed ~= plain)."""
    rng = random.Random(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(FILES):
            data = rng.randbytes(32 << 10)
            info = tarfile.TarInfo(f"f{i:03d}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, 6, mtime=0),
    "isal-gzip": lambda data: igzip.compress(data, 1, mtime=0),  # what pack writes
    "bzip2": lambda data: bz2.compress(data, 1),
    "xz": lambda data: lzma.compress(data, preset=0),
    "zstd": lambda data: zstandard.ZstdCompressor(level=1).compress(data),
    "none": lambda data: data,
}


@contextmanager
def _stalling_pipe(
    data: bytes, release: threading.Event, resumed: threading.Event
) -> Iterator[io.BufferedReader]:
    """The read end of a pipe that gets the first half of ``data``, then nothing
    until ``release`` is set (or STALL_SECONDS pass), then ``resumed`` is set
    and the rest follows."""
    r, w = os.pipe()
    half = len(data) // 2

    def feed() -> None:
        try:
            os.write(w, data[:half])
            release.wait(STALL_SECONDS)
            resumed.set()
            os.write(w, data[half:])
        except BrokenPipeError:  # the reader gave up; the test reports why
            pass
        finally:
            os.close(w)

    feeder = threading.Thread(target=feed, name="stalling-pipe")
    feeder.start()
    try:
        with open(r, "rb") as stream:
            yield stream
    finally:
        release.set()
        feeder.join()


@pytest.mark.parametrize("kind", list(COMPRESSORS))
def test_entries_of_the_first_half_come_out_during_a_stall(kind: str) -> None:
    data = COMPRESSORS[kind](_tar())
    release, resumed = threading.Event(), threading.Event()
    during_stall: list[str] = []
    names: list[str] = []
    with _stalling_pipe(data, release, resumed) as stream, read_archive(stream) as members:
        for member in members:
            member.read_digest()
            names.append(member.entry.name)
            if not resumed.is_set():
                during_stall.append(member.entry.name)
                # A quarter of the archive is well inside the first half.
                if len(during_stall) == FILES // 4:
                    release.set()
    assert len(during_stall) >= FILES // 4, (
        f"{kind}: only {during_stall} came out before the stall ended"
    )
    assert names == [f"f{i:03d}" for i in range(FILES)]


class _Trickle(io.RawIOBase):
    """A stream without a file descriptor that gives ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int = 1000) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def _read_all(stream: io.RawIOBase | io.BufferedIOBase | io.BufferedReader) -> bytes:
    kind, plain = open_decompressed(stream)  # type: ignore[arg-type]
    assert kind is Compression.GZIP
    out = bytearray()
    buf = bytearray(1 << 16)
    try:
        while n := plain.readinto(buf):
            out += buf[:n]
    finally:
        plain.close()
    return bytes(out)


_A = gzip.compress(b"hello " * 5000, mtime=0)
_B = igzip.compress(b"world" * 10, mtime=0)
_BAD_CRC = _A[:-8] + bytes([_A[-8] ^ 1]) + _A[-7:]

GOOD = {
    "one member": (_A, b"hello " * 5000),
    "two members": (_A + _B, b"hello " * 5000 + b"world" * 10),
    "zero padding": (_A + bytes(700), b"hello " * 5000),
}
BAD = {
    "garbage after": _A + b"garbage!",
    "bad crc": _BAD_CRC,
    "truncated trailer": _A[:-3],
    "truncated deflate": _A[: len(_A) // 2],
    "cut in a member header": _A + _B[:1],
}


@pytest.mark.parametrize("case", list(GOOD))
def test_streaming_gzip_reads_what_the_file_reader_reads(tmp_path: Path, case: str) -> None:
    data, plain = GOOD[case]
    path = tmp_path / "w.gz"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert _read_all(f) == plain  # regular file: isal's threaded reader
    assert _read_all(_Trickle(data)) == plain
    assert _read_all(_Trickle(data, step=1)) == plain


@pytest.mark.parametrize("case", list(BAD))
def test_streaming_gzip_rejects_what_the_file_reader_rejects(tmp_path: Path, case: str) -> None:
    data = BAD[case]
    path = tmp_path / "w.gz"
    path.write_bytes(data)
    with open(path, "rb") as f, pytest.raises(Exception):  # noqa: B017 - each its own
        _read_all(f)
    with pytest.raises(Exception):  # noqa: B017
        _read_all(_Trickle(data))


def test_a_broken_stream_is_a_corrupt_ware() -> None:
    data = gzip.compress(_tar(), mtime=0)
    with (
        pytest.raises(FilesetError) as caught,
        read_archive(
            _Trickle(data[: len(data) // 2], step=4096)  # type: ignore[arg-type]
        ) as members,
    ):
        for member in members:
            member.read_digest()
    assert caught.value.category is Category.WARE_CORRUPT


def _gzipped(writes: list[bytes], writer: Callable[[io.BytesIO], Any]) -> bytes:
    out = io.BytesIO()
    gz = writer(out)
    for chunk in writes:
        gz.write(chunk)
    gz.close()
    return out.getvalue()


def _write_patterns() -> Iterator[list[bytes]]:
    rng = random.Random(15)
    yield []
    yield [b"x" * 512, b"\0" * 1024]  # a tar of one empty file
    yield [b"a" * BLOCK]
    yield [b"a" * (BLOCK - 1), b"b"]
    yield [b"a" * BLOCK, b"b"]  # one byte past the block: the thread takes over
    yield [rng.randbytes(700_000), rng.randbytes(700_000)]
    yield [b"h" * 512] * 2100
    for _ in range(12):
        yield [
            rng.randbytes(rng.randint(0, 60_000)) + b"z" * rng.randint(0, 60_000)
            for _ in range(rng.randint(1, 40))
        ]


def test_a_pack_writes_the_same_gzip_with_or_without_its_thread() -> None:
    """Small archives are gzipped in line, larger ones by isal's threaded writer: the
    bytes are what the threaded writer alone gives, whatever the sizes and writes."""
    for writes in _write_patterns():
        mine = _gzipped(writes, open_gzip_writer)
        assert mine == _gzipped(writes, _threaded_gzip_writer)
        assert gzip.decompress(mine) == b"".join(writes)


def test_a_small_archive_is_gzipped_without_a_thread() -> None:
    before = threading.active_count()
    out = io.BytesIO()
    gz = open_gzip_writer(out)
    gz.write(b"x" * 10_000)
    assert threading.active_count() == before  # no thread for what fits one block
    gz.write(b"y" * BLOCK)
    assert threading.active_count() == before + 1  # past it: isal's writer thread
    gz.close()
    assert gzip.decompress(out.getvalue()) == b"x" * 10_000 + b"y" * BLOCK
