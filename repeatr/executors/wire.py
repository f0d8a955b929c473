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
    """The message in one frame's data; ValueError if it is not one of ours."""
    msg = marshal.loads(data)
    if not isinstance(msg, dict):
        raise ValueError(f"not a message: {msg!r}")
    return from_wire(msg)


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
