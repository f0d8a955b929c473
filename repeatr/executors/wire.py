"""Frames between the parent and the sandbox helper: 4-byte length + marshal.

Messages are ``repeatr.executors.protocol`` types, sent in their tagged dict
form (``Message.to_wire``: plain values, JSON-compatible but for bytes), as
``marshal`` data: it is built in (importing ``json`` costs the
helper ~5 ms, a third of its start-up) and both ends are the same
interpreter (``sys.executable``), so the format always matches.
"""

from __future__ import annotations

import _socket
import marshal
import os
import sys

from repeatr.executors.protocol import from_wire

MAX_FRAME = 16 << 20

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.executors.protocol import Message


#: A request to the sandbox server, or its answer, is a few bytes; a longer packet is not ours.
MAX_PACKET = 1 << 16


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
        _check_sizes(data)
        msg = marshal.loads(data)
        if not isinstance(msg, dict):
            raise ValueError(f"not a message: a {type(msg).__name__}")
        return from_wire(msg)
    except ValueError:
        raise
    except Exception as e:  # EOFError, TypeError, RecursionError, MemoryError: all "not ours"
        raise ValueError(f"not a message: {type(e).__name__}: {e}") from None


#: Marshal type codes (``Python/marshal.c``; the 0x80 bit is FLAG_REF) of what
#: ``Message.to_wire`` makes, by how their data is sized: fixed, a 1- or 4-byte
#: length, a count of 1 or 4 bytes of objects that follow.
_FIXED = {ord("N"): 0, ord("F"): 0, ord("T"): 0, ord("i"): 4, ord("g"): 8, ord("r"): 4}
_LEN1 = {ord("z"), ord("Z")}
_LEN4 = {ord("s"), ord("t"), ord("u"), ord("a"), ord("A")}
_COUNT1 = ord(")")
_COUNT4 = {ord("("), ord("[")}
_LONG, _DICT, _END = ord("l"), ord("{"), ord("0")


def _check_sizes(data: bytes) -> None:
    """ValueError unless every size in ``data`` fits in it: ``marshal.loads`` allocates
    a tuple or list of the count it reads before its items (a frame of 30 bytes can
    ask for gigabytes), and reads code objects. Iterative: no recursion limit."""
    pos, end = 0, len(data)
    pending = [1]  # objects still to read at each level; -1: a dict's, until its "0"
    while pending:
        if pending[-1] == 0:
            pending.pop()
            continue
        if pos >= end:
            raise ValueError("marshal data too short")
        code = data[pos] & 0x7F
        pos += 1
        if code == _END:
            if pending[-1] != -1:
                raise ValueError("a dict's end outside a dict")
            pending.pop()
            continue
        if pending[-1] > 0:
            pending[-1] -= 1
        if code in _FIXED:
            size = _FIXED[code]
        elif code in _LEN1 or code == _COUNT1:
            if pos >= end:
                raise ValueError("marshal data too short")
            size = data[pos]
            pos += 1
        elif code in _LEN4 or code in _COUNT4 or code == _LONG:
            if pos + 4 > end:
                raise ValueError("marshal data too short")
            size = int.from_bytes(data[pos : pos + 4], "little", signed=True)
            pos += 4
            size = 2 * abs(size) if code == _LONG else size
        elif code == _DICT:
            pending.append(-1)
            continue
        else:
            raise ValueError(f"marshal type {chr(code)!r} is not in messages")
        if size < 0 or size > end - pos:
            raise ValueError("a size past the end of the marshal data")
        if code == _COUNT1 or code in _COUNT4:
            pending.append(size)  # each item is at least one byte: bounded by the data
        else:
            pos += size
    if pos != end:
        raise ValueError("data after the marshal object")


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
    write_frames(fd, [msg])


def write_frames(fd: int, msgs: list[Message]) -> None:
    """``msgs`` in one write (a blocking fd): the reader wakes once for all of them."""
    data = b"".join(encode(msg) for msg in msgs)
    while data:
        data = data[os.write(fd, data) :]


# The sandbox server's packets (SOCK_SEQPACKET, fds attached) with ``_socket``, built in:
# the ``socket`` module costs a run ~4 ms of imports (selectors, array, enum conversions)
# for two thin wrappers over sendmsg/recvmsg.


def socketpair() -> tuple[_socket.socket, _socket.socket]:
    """A connected pair of Unix stream sockets (a helper's control socket, and ours)."""
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return a, b


def send_packet(sock: _socket.socket, data: bytes, fds: list[int]) -> None:
    """One packet: ``data`` and copies of ``fds`` (``socket.send_fds``)."""
    anc = []
    if fds:
        payload = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
        anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)]
    sock.sendmsg([data], anc)


def receive_packet(sock: _socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One packet: its data (empty at end of stream) and the fds it carried, close-on-exec."""
    data, ancdata, _flags, _addr = sock.recvmsg(
        MAX_PACKET, _socket.CMSG_SPACE(max_fds * 4), _socket.MSG_CMSG_CLOEXEC
    )
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds += [int.from_bytes(payload[i : i + 4], sys.byteorder) for i in range(0, usable, 4)]
    return data, fds
