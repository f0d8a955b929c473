"""Frames between the parent and the sandbox helper: 4-byte length + marshal.

Messages are ``repeatr.executors.protocol`` types, sent in their tagged dict
form (``Message.to_wire``: plain values, JSON-compatible but for bytes), as
``marshal`` data: it is built in (importing ``json`` costs the
helper ~5 ms, a third of its start-up) and both ends are the same
interpreter (``sys.executable``), so the format always matches.
"""

from __future__ import annotations

import marshal
import os

from repeatr.executors.protocol import from_wire

MAX_FRAME = 16 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.executors.protocol import Message


def encode(msg: Message) -> bytes:
    data = marshal.dumps(msg.to_wire())
    return len(data).to_bytes(4, "big") + data


def decode(data: bytes) -> Message:
    """The message in one frame's data; ValueError, and only that, if it is not one of ours.

    The data comes from a helper that a job may have taken over: whatever it
    is (torn, not marshal, nested past the recursion limit, a dict keyed by
    lists), the parent gets a ValueError to report, never another exception.
    """
    try:
        msg = marshal.loads(data)
        if not isinstance(msg, dict):
            raise ValueError(f"not a message: a {type(msg).__name__}")
        return from_wire(msg)
    except ValueError:
        raise
    except Exception as e:  # EOFError, TypeError, RecursionError, MemoryError: all "not ours"
        raise ValueError(f"not a message: {type(e).__name__}: {e}") from None


def frame_length(header: bytes) -> int:
    n = int.from_bytes(header, "big")
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes is too long")
    return n


def _read_exactly(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_frame(fd: int) -> Message | None:
    """One message from a blocking fd; None at end of stream."""
    header = _read_exactly(fd, 4)
    if header is None:
        return None
    data = _read_exactly(fd, frame_length(header))
    return None if data is None else decode(data)


def write_frame(fd: int, msg: Message) -> None:
    data = encode(msg)
    while data:
        data = data[os.write(fd, data) :]
