"""Writing a file's content so that zeros cost no disk: every aligned all-zero chunk is a hole.

A ware of a few hundred bytes can describe a file of gigabytes: a sparse
member of a GNU or PAX tar (the reader turns its holes into zeros), or a
long run of zeros that gzip squeezes to nothing. Written out, such a file
fills the disk. So the writer never writes a zero chunk: it leaves a hole.

The rule is a function of the content alone, so the same ware always lands
the same way on disk, whatever archive format or block sizes carried it:
the file is cut at every multiple of :data:`CHUNK` (64 KiB) of its offset,
and a chunk that is all zeros (the last one too, however short) is a hole;
every other chunk is written. Reading the file back gives the same bytes,
so the tree hash (which hashes content, never allocation) is unchanged.
64 KiB is a multiple of the page and block sizes of the filesystems a cache
lives on (4 KiB), so every hole is a real one, and large enough that data
with scattered zero pages is written in a few large writes.

The check costs little next to hashing: a chunk whose first or last byte is
not zero is data at once; only chunks with zero ends are compared in full
(``bytes == bytes``, a memcmp that stops at the first difference).
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: The unit of holes: aligned by file offset, a power of two, a multiple of 4 KiB.
CHUNK = 64 << 10
_ZERO = bytes(CHUNK)


def _is_zero(data: bytes, start: int, end: int) -> bool:
    if data[start] or data[end - 1]:
        return False
    if end - start == CHUNK:
        return data[start:end] == _ZERO
    return data[start:end] == _ZERO[: end - start]


class SparseWriter:
    """Writes one file's content to ``fd`` block by block; :meth:`finish` sets its size.

    ``allocate(n)`` is called before ``n`` bytes of data are written (holes
    are free): it may raise to stop the write (a disk budget). Uses
    ``pwrite`` at explicit offsets, so the fd's own offset is never used.
    """

    __slots__ = ("_allocate", "_carry", "_end", "_fd", "_pos", "allocated")

    def __init__(self, fd: int, allocate: Callable[[int], None] | None = None) -> None:
        self._fd = fd
        self._allocate = allocate
        #: Logical offset of the first byte not yet taken (carry included).
        self._pos = 0
        #: The start of the current chunk, when the blocks so far ended inside it.
        self._carry = b""
        #: Bytes of data written (not counting holes), and the end of the last write.
        self.allocated = 0
        self._end = 0

    @property
    def size(self) -> int:
        """Bytes of content taken so far."""
        return self._pos

    def write(self, block: bytes) -> None:
        if not isinstance(block, bytes):  # a memoryview or bytearray from a caller
            block = bytes(block)
        n = len(block)
        if not n:
            return
        start = 0
        carry = self._carry
        if carry:
            # Complete the chunk the previous block ended in.
            need = CHUNK - len(carry)
            carry += block[:need]
            self._pos += min(need, n)
            if len(carry) < CHUNK:
                self._carry = carry
                return
            self._carry = b""
            self._chunks(carry, 0, CHUNK, self._pos - CHUNK)
            start = need
        # Whole chunks straight from the block; the tail waits in the carry.
        whole_end = start + (n - start) // CHUNK * CHUNK
        if whole_end > start:
            self._chunks(block, start, whole_end, self._pos)
            self._pos += whole_end - start
        if whole_end < n:
            self._carry = block[whole_end:]
            self._pos += n - whole_end

    def finish(self) -> int:
        """Write or skip the last chunk, give the file its full size; the size."""
        if self._carry:
            carry = self._carry
            self._carry = b""
            self._chunks(carry, 0, len(carry), self._pos - len(carry))
        if self._end != self._pos:  # it ends in a hole
            os.ftruncate(self._fd, self._pos)
        return self._pos

    def _chunks(self, data: bytes, start: int, end: int, offset: int) -> None:
        """Write ``data[start:end]`` (whole chunks, or the last) at ``offset``, skipping holes."""
        run = start  # start of the data run not yet written
        i = start
        while i < end:
            stop = min(i + CHUNK, end)
            if _is_zero(data, i, stop):
                if run < i:
                    self._put(data, run, i, offset + (run - start))
                run = stop
            i = stop
        if run < end:
            self._put(data, run, end, offset + (run - start))

    def _put(self, data: bytes, start: int, end: int, offset: int) -> None:
        if self._allocate is not None:
            self._allocate(end - start)
        view = memoryview(data)[start:end]
        done = 0
        while done < len(view):
            done += os.pwrite(self._fd, view[done:], offset + done)
        self.allocated += end - start
        self._end = offset + end - start
