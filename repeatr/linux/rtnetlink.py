"""rtnetlink: the link, address and route requests a run's network needs, and no more.

One :class:`RtNetlink` is a ``NETLINK_ROUTE`` socket bound to the network
namespace of the thread that opened it. Every request waits for the
kernel's answer; a refusal raises ``OSError`` whose errno is the kernel's
and whose message names the request and, when the kernel gives one, its
reason (extended ack).

Why our own and not pyroute2 (the library we started with): a bridged run
sends seven requests, and importing pyroute2 costs ~130 ms in every new
process, against a budget of 10 ms for the whole bridge set-up
(docs/design.md). The tests check what this module configures with
iproute2 (``ip -json``), an independent implementation.

Message layouts and constants: /usr/include/linux/{netlink,rtnetlink,
if_link,if_addr,veth}.h.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface
from typing import NamedTuple

from repeatr.linux.libc import IFF_UP

# /usr/include/linux/netlink.h
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended ack attributes follow
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSGERR_ATTR_MSG = 1
NLA_TYPE_MASK = 0x3FFF

# /usr/include/linux/rtnetlink.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
RTA_GATEWAY = 5

# /usr/include/linux/if_link.h
IFLA_IFNAME = 3
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
# /usr/include/linux/veth.h
VETH_INFO_PEER = 1
# /usr/include/linux/if_addr.h
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_BROADCAST = 4

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLATTR = struct.Struct("=HH")  # len, type
_ERRNO = struct.Struct("=i")


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    size = _NLATTR.size + len(payload)
    return _NLATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def attr_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (nested ones stay packed); the last one wins."""
    out = {}
    pos = 0
    while pos + _NLATTR.size <= len(data):
        size, kind = _NLATTR.unpack_from(data, pos)
        if size < _NLATTR.size:
            break
        out[kind & NLA_TYPE_MASK] = data[pos + _NLATTR.size : pos + size]
        pos += size + (-size % 4)
    return out


def _text(payload: bytes | None) -> str | None:
    return None if payload is None else payload.split(b"\0", 1)[0].decode(errors="replace")


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


class Link(NamedTuple):  # a NamedTuple: a sixth of a dataclass's import cost
    """An interface, from an RTM_NEWLINK answer."""

    ifindex: int
    name: str
    flags: int
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth", ...; None for a plain device
    master: int | None


class Address(NamedTuple):
    """An IPv4 address on an interface, from an RTM_NEWADDR answer."""

    ifindex: int
    label: str
    interface: IPv4Interface


class RtNetlink:
    """A NETLINK_ROUTE socket in the calling thread's network namespace (see the module doc)."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> RtNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------

    def request(self, what: str, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; the answers' (type, payload) until its ack or the dump's end.

        ``what`` names the request in the error a refusal raises.
        """
        self._seq += 1
        seq = self._seq
        flags |= NLM_F_REQUEST | (0 if flags & NLM_F_DUMP == NLM_F_DUMP else NLM_F_ACK)
        self._sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body)
        answers: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 16)
            pos = 0
            while pos + _NLMSGHDR.size <= len(data):
                size, mtype, mflags, mseq, _ = _NLMSGHDR.unpack_from(data, pos)
                payload = data[pos + _NLMSGHDR.size : pos + size]
                pos += size + (-size % 4)
                if size < _NLMSGHDR.size:
                    raise OSError(errno.EPROTO, f"{what}: malformed netlink answer")
                if mseq != seq:
                    continue  # e.g. the ack that follows a GET's answer, read late
                if mtype == NLMSG_DONE:
                    return answers
                if mtype == NLMSG_ERROR:
                    (code,) = _ERRNO.unpack_from(payload)
                    if code == 0:
                        return answers
                    raise _refusal(what, -code, payload, mflags)
                answers.append((mtype, payload))
                if not mflags & NLM_F_MULTI:
                    return answers

    def link(self, name: str) -> Link | None:
        """The interface called ``name``; None if there is none."""
        answers = self._naming(f"looking up interface {name}", RTM_GETLINK, name)
        for mtype, payload in answers or ():
            if mtype == RTM_NEWLINK:
                return _link(payload)
        return None

    def add_bridge(self, name: str) -> None:
        info = attr(IFLA_LINKINFO, attr_str(IFLA_INFO_KIND, "bridge"))
        self.request(
            f"creating bridge {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
            ifinfomsg() + attr_str(IFLA_IFNAME, name) + info,
        )

    def add_veth(self, name: str, *, peer: str, peer_netns_fd: int, master: int) -> None:
        """A veth pair: ``name`` here, up, on bridge ``master``; ``peer`` (down) in the netns.

        The peer cannot be brought up in the same request (the kernel opens it
        before the pair is joined: ENOTCONN); see :meth:`set_up`.
        """
        peer_msg = (
            ifinfomsg()
            + attr_str(IFLA_IFNAME, peer)
            + attr_u32(IFLA_NET_NS_FD, peer_netns_fd)
        )
        info = attr(
            IFLA_LINKINFO,
            attr_str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_msg)),
        )
        self.request(
            f"creating veth {name}", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
            ifinfomsg(flags=IFF_UP, change=IFF_UP)
            + attr_str(IFLA_IFNAME, name)
            + attr_u32(IFLA_MASTER, master)
            + info,
        )

    def set_up(self, index: int) -> None:
        self.request(
            f"setting interface {index} up", RTM_NEWLINK, 0,
            ifinfomsg(index, flags=IFF_UP, change=IFF_UP),
        )

    def set_alias(self, index: int, alias: str) -> None:
        self.request(
            f"setting the alias of interface {index}", RTM_NEWLINK, 0,
            ifinfomsg(index) + attr_str(IFLA_IFALIAS, alias),
        )

    def delete_link(self, name: str) -> bool:
        """Delete interface ``name`` (for a veth, both ends); False if there was none."""
        return self._naming(f"deleting interface {name}", RTM_DELLINK, name) is not None

    def _naming(self, what: str, kind: int, name: str) -> list[tuple[int, bytes]] | None:
        """A link request naming interface ``name``; None if there is no such interface."""
        try:
            return self.request(what, kind, 0, ifinfomsg() + attr_str(IFLA_IFNAME, name))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise

    def addresses(self) -> list[Address]:
        """Every IPv4 address in this namespace."""
        answers = self.request(
            "listing addresses", RTM_GETADDR, NLM_F_DUMP,
            _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0),
        )
        out = []
        for mtype, payload in answers:
            if mtype != RTM_NEWADDR:
                continue
            family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(payload)
            if family != socket.AF_INET:
                continue
            found = attrs(payload[_IFADDRMSG.size :])
            raw = found.get(IFA_LOCAL) or found.get(IFA_ADDRESS)
            if raw is None or len(raw) != 4:
                continue
            iface = IPv4Interface((IPv4Address(raw), prefixlen))
            out.append(Address(index, _text(found.get(IFA_LABEL)) or "", iface))
        return out

    def add_address(self, index: int, address: IPv4Interface) -> None:
        """``address`` on interface ``index``, with the subnet's broadcast address."""
        body = (
            _IFADDRMSG.pack(socket.AF_INET, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
            + attr(IFA_LOCAL, address.ip.packed)
            + attr(IFA_ADDRESS, address.ip.packed)
        )
        if address.network.prefixlen < 31:
            body += attr(IFA_BROADCAST, address.network.broadcast_address.packed)
        self.request(
            f"adding address {address} to interface {index}", RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL, body,
        )

    def add_default_route(self, gateway: IPv4Address) -> None:
        body = _RTMSG.pack(
            socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
        ) + attr(RTA_GATEWAY, gateway.packed)
        self.request(
            f"adding a default route via {gateway}", RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body
        )


def _link(payload: bytes) -> Link:
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(payload)
    found = attrs(payload[_IFINFOMSG.size :])
    info = attrs(found.get(IFLA_LINKINFO, b""))
    master = found.get(IFLA_MASTER)
    return Link(
        ifindex=index,
        name=_text(found.get(IFLA_IFNAME)) or "",
        flags=flags,
        kind=_text(info.get(IFLA_INFO_KIND)),
        master=struct.unpack("=I", master)[0] if master else None,
    )


def _refusal(what: str, code: int, payload: bytes, flags: int) -> OSError:
    """The OSError for an NLMSG_ERROR: errno, the request, the kernel's reason if it gave one."""
    reason = None
    if flags & NLM_F_ACK_TLVS:
        # With NETLINK_CAP_ACK the request comes back as its header only.
        reason = _text(attrs(payload[_ERRNO.size + _NLMSGHDR.size :]).get(NLMSGERR_ATTR_MSG))
    detail = f"{os.strerror(code)} ({reason})" if reason else os.strerror(code)
    return OSError(code, f"{what}: {detail}")
