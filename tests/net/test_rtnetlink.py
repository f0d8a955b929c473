"""repeatr.linux.rtnetlink against the kernel, checked with iproute2 (an independent client).

Everything happens inside a network namespace each test creates (so the
host's links are never touched) and is gone with it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, TypeVar

import pytest

from repeatr.linux import libc
from repeatr.linux.libc import IFF_UP
from repeatr.linux.rtnetlink import RtNetlink
from tests import netnames
from tests.rootfs import named_netns

T = TypeVar("T")


def in_netns(path: Path, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh thread that has joined the namespace at ``path``.

    Sockets opened there stay bound to that namespace afterwards.
    """
    out: list[T] = []
    err: list[BaseException] = []

    def work() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.setns(fd, libc.CLONE_NEWNET)
            finally:
                os.close(fd)
            out.append(fn())
        except BaseException as e:  # re-raised in the caller
            err.append(e)

    t = threading.Thread(target=work)  # exits with the thread: nobody else is in the netns
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def _scratch_netns(tag: str) -> Iterator[Path]:
    with named_netns(f"{netnames.NETNS_PREFIX}{tag}-{os.getpid()}") as path:
        yield path


@pytest.fixture
def netns(no_leftovers: None) -> Iterator[Path]:
    yield from _scratch_netns("nl")


@pytest.fixture
def peer_netns(no_leftovers: None) -> Iterator[Path]:
    yield from _scratch_netns("nlpeer")


def ip(path: Path, *args: str) -> Any:
    """What ``ip -json -details`` says inside the namespace at ``path``."""
    out = subprocess.run(
        ["ip", "-json", "-details", "-n", path.name, *args],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out) if out.strip() else []


def test_bridge_veth_address_route_as_iproute2_sees_them(netns: Path, peer_netns: Path) -> None:
    nl = in_netns(netns, RtNetlink)
    inside = in_netns(peer_netns, RtNetlink)
    subprocess.run(["ip", "-n", netns.name, "link", "set", "lo", "up"], check=True)
    try:
        assert nl.link("rptbr0") is None
        nl.add_bridge("rptbr0")
        br = nl.link("rptbr0")
        assert br is not None and br.kind == "bridge" and not br.flags & IFF_UP
        nl.set_up(br.ifindex)
        nl.add_address(br.ifindex, IPv4Interface("10.99.0.1/24"))

        fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            nl.add_veth("rptv0", peer="eth0", peer_netns_fd=fd, master=br.ifindex)
        finally:
            os.close(fd)
        veth = nl.link("rptv0")
        assert veth is not None and veth.kind == "veth" and veth.master == br.ifindex
        nl.set_alias(veth.ifindex, "repeatr run=x owner=y")

        eth0 = inside.link("eth0")
        assert eth0 is not None
        inside.add_address(eth0.ifindex, IPv4Interface("10.99.0.7/24"))
        inside.set_up(eth0.ifindex)
        inside.add_default_route(IPv4Address("10.99.0.1"))

        # What iproute2 reads back.
        (br_info,) = ip(netns, "link", "show", "rptbr0")
        assert br_info["ifindex"] == br.ifindex and "UP" in br_info["flags"]
        assert br_info["linkinfo"]["info_kind"] == "bridge"
        (v_info,) = ip(netns, "link", "show", "rptv0")
        assert v_info["master"] == "rptbr0" and "UP" in v_info["flags"]
        assert v_info["ifalias"] == "repeatr run=x owner=y"
        assert v_info["linkinfo"]["info_kind"] == "veth"
        (br_addr,) = ip(netns, "-4", "addr", "show", "rptbr0")
        assert [(a["local"], a["prefixlen"]) for a in br_addr["addr_info"]] == [("10.99.0.1", 24)]
        (e_info,) = ip(peer_netns, "-4", "addr", "show", "eth0")
        assert "UP" in e_info["flags"]
        assert [(a["local"], a["broadcast"], a["prefixlen"]) for a in e_info["addr_info"]] == [
            ("10.99.0.7", "10.99.0.255", 24)
        ]
        assert [r["gateway"] for r in ip(peer_netns, "route", "show", "default")] == ["10.99.0.1"]

        # And our listing agrees with iproute2's.
        ours = {(a.ifindex, a.label, a.interface) for a in nl.addresses()}
        theirs = {
            (link["ifindex"], a.get("label", ""), IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
            for link in ip(netns, "-4", "addr", "show")
            for a in link["addr_info"]
        }
        assert ours == theirs and len(ours) == 2  # lo's 127.0.0.1 and the bridge's

        assert nl.delete_link("rptv0") is True
        assert nl.delete_link("rptv0") is False
        assert inside.link("eth0") is None  # the peer went with it
    finally:
        nl.close()
        inside.close()


def test_refusals_carry_errno_request_and_kernel_reason(netns: Path) -> None:
    nl = in_netns(netns, RtNetlink)
    try:
        nl.add_bridge("rptbr1")
        with pytest.raises(OSError) as exists:
            nl.add_bridge("rptbr1")
        assert exists.value.errno == errno.EEXIST
        assert "creating bridge rptbr1" in str(exists.value)
        lo = nl.link("lo")
        assert lo is not None
        with pytest.raises(OSError) as bad:
            nl.add_veth("rptv1", peer="eth0", peer_netns_fd=999_999, master=0)
        assert bad.value.errno == errno.EBADF
        with pytest.raises(OSError) as unreachable:
            nl.add_default_route(IPv4Address("10.98.0.1"))  # no address in that subnet
        assert unreachable.value.errno == errno.ENETUNREACH
        assert "default route via 10.98.0.1" in str(unreachable.value)
        assert nl.link("no-such-link") is None
    finally:
        nl.close()


def test_a_dump_spanning_many_datagrams(netns: Path) -> None:
    """600 addresses do not fit one answer datagram: the dump must read them all."""
    nl = in_netns(netns, RtNetlink)
    try:
        nl.add_bridge("rptbr2")
        br = nl.link("rptbr2")
        assert br is not None
        wanted = {IPv4Interface(f"10.97.{i // 250}.{i % 250 + 1}/16") for i in range(600)}
        for iface in wanted:
            nl.add_address(br.ifindex, iface)
        assert {a.interface for a in nl.addresses() if a.ifindex == br.ifindex} == wanted
        # The socket is still in step: the next request gets its own answer.
        assert nl.link("rptbr2") == br
    finally:
        nl.close()
