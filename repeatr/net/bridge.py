"""Links over netlink (pyroute2's sync ``IPRoute``): the host bridge, a run's veth pair.

Every function takes an open ``IPRoute`` and blocks: callers run them in a
worker thread (``anyio.to_thread.run_sync``). pyroute2's ``AsyncIPRoute``
only works on asyncio, and the sync ``IPRoute`` runs its own event loop,
which is fine in a thread that has none; under trio the same code works.

Why pyroute2 and not ``ip -batch``: the same setup with iproute2 takes
three processes (``ip netns add``, ``ip -batch`` for the host side, ``ip -n
<ns> -batch`` for the inside) and measured 5.6 ms; this module, two
netlink sockets in one thread and no fork or exec, measured 4.7-7 ms on
the same (shared, 2 vCPU) host (``scripts/bench/net.py``). No clear win
for ``ip``, so we keep structured errors and no output parsing.

pyroute2 is imported on first use (it costs ~160 ms), so ``repeatr`` runs
with ``none``/``host`` networks, and a ``gc`` with nothing to remove, never
load it.

Netlink errors are translated here into :class:`~repeatr.errors.NetworkError`
naming the operation, with the original as ``__cause__``.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

from repeatr.errors import Category, NetworkError
from repeatr.net.config import Network
from repeatr.owner import Owner

#: /usr/include/linux/if.h
IFF_UP = 0x1
#: Name of the container end of every veth pair, inside the run's namespace.
CONTAINER_IFNAME = "eth0"
_SYS_NET = Path("/sys/class/net")
_ALIAS = re.compile(r"repeatr run=(?P<run>\S+) owner=(?P<owner>\S+)")


def iproute() -> Any:
    """A sync pyroute2 ``IPRoute`` bound to the calling thread's network namespace."""
    from pyroute2 import IPRoute

    try:
        return IPRoute()
    except OSError as e:
        raise NetworkError(f"cannot open a netlink socket: {e}") from e


@contextmanager
def _netlink(what: str, *, hint: str | None = None) -> Iterator[None]:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as e:
        raise NetworkError(f"{what} failed: {os.strerror(e.code)}", hint=hint) from e
    except OSError as e:
        raise NetworkError(f"{what} failed: {e}", hint=hint) from e


def _code(exc: BaseException) -> int | None:
    cause = exc.__cause__
    return getattr(cause, "code", None) or getattr(cause, "errno", None)


def link_index(ipr: Any, ifname: str) -> int | None:
    indices: list[int] = ipr.link_lookup(ifname=ifname)
    return indices[0] if indices else None


def ensure_bridge(ipr: Any, network: Network) -> int:
    """The index of ``network``'s bridge, created with the gateway address if missing.

    Safe when many invocations race to create it: "exists" counts as
    success and the state is re-read. A bridge that exists with a different
    IPv4 address, or a name taken by a non-bridge link, is an error (two
    configurations disagree); so is a subnet that overlaps an address on
    another interface of the host (checked when the bridge is created).
    """
    name = network.bridge
    link = _get_link(ipr, name)
    if link is None:
        _check_subnet_free(ipr, network)
        try:
            with _netlink(f"creating bridge {name}"):
                ipr.link("add", ifname=name, kind="bridge")
        except NetworkError as e:
            if _code(e) != errno.EEXIST:
                raise
        link = _get_link(ipr, name)
        if link is None:
            raise NetworkError(f"bridge {name} vanished right after it was created")
    index: int = link["index"]
    kind = _link_kind(link)
    if kind != "bridge":
        raise NetworkError(
            f"interface {name} exists but is a {kind or 'non-bridge'} link, not a bridge",
            category=Category.USAGE,
            hint="configure another bridge name for this network",
        )
    _ensure_gateway(ipr, index, network)
    if not link["flags"] & IFF_UP:
        with _netlink(f"setting bridge {name} up"):
            ipr.link("set", index=index, state="up")
    return index


def _get_link(ipr: Any, ifname: str) -> Any:
    """The RTM_NEWLINK message of ``ifname``, or None if there is no such link."""
    try:
        with _netlink(f"looking up interface {ifname}"):
            (link,) = ipr.link("get", ifname=ifname)
    except NetworkError as e:
        if _code(e) in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return link


def _link_kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _ipv4_addrs(ipr: Any, index: int | None = None) -> list[tuple[int, str, IPv4Interface]]:
    """(interface index, label, address) of the IPv4 addresses, of one interface or all."""
    with _netlink("listing addresses"):
        msgs = ipr.addr("dump", family=2) if index is None else ipr.addr("dump", index=index)
    out = []
    for msg in msgs:
        if msg["family"] != 2:  # AF_INET
            continue
        addr = IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        out.append((msg["index"], msg.get_attr("IFA_LABEL") or "", addr))
    return out


def _ensure_gateway(ipr: Any, index: int, network: Network) -> None:
    gw = network.gateway
    present = [iface for idx, _, iface in _ipv4_addrs(ipr, index) if idx == index]
    others = [iface for iface in present if iface != gw]
    if others:
        shown = ", ".join(map(str, others))
        raise NetworkError(
            f"bridge {network.bridge} has address {shown}, but network {network.name!r} "
            f"expects {gw}",
            category=Category.USAGE,
            hint=f"fix the subnet setting, or remove the bridge: `ip link del {network.bridge}`",
        )
    if gw in present:
        return
    try:
        with _netlink(f"adding address {gw} to bridge {network.bridge}"):
            ipr.addr("add", index=index, address=str(gw.ip), prefixlen=gw.network.prefixlen)
    except NetworkError as e:
        if _code(e) != errno.EEXIST:  # a racing creator added it first
            raise


def _check_subnet_free(ipr: Any, network: Network) -> None:
    for _, label, iface in _ipv4_addrs(ipr):
        if label == network.bridge:  # a racing creator made the bridge meanwhile
            continue
        if iface.network.overlaps(network.subnet) and not iface.ip.is_loopback:
            raise NetworkError(
                f"subnet {network.subnet} of network {network.name!r} overlaps address "
                f"{iface} already on this host",
                category=Category.USAGE,
                hint="configure a subnet no host interface uses",
            )


def alias(run_id: str, owner: Owner) -> str:
    """The alias of a run's host-side veth: names the run and its owner, for gc."""
    return f"repeatr run={run_id} owner={owner}"


def parse_alias(text: str) -> tuple[str, Owner | None] | None:
    """(run ID, owner) from a veth alias made by :func:`alias`; None for anything else."""
    m = _ALIAS.fullmatch(text.strip())
    return None if m is None else (m["run"], Owner.try_parse(m["owner"]))


def alias_run(text: str) -> str | None:
    parsed = parse_alias(text)
    return None if parsed is None else parsed[0]


def add_veth(ipr: Any, host_ifname: str, netns_fd: int, bridge_index: int) -> None:
    """A veth pair: ``host_ifname`` on the bridge and up, its peer ``eth0`` in ``netns_fd``.

    Name its owner with :func:`set_alias` right after (the kernel ignores
    IFLA_IFALIAS in a create request). A crash in between leaves a veth
    without alias; its peer is in the run's namespace, so removing that
    namespace destroys it.
    """
    try:
        with _netlink(f"creating veth {host_ifname}"):
            ipr.link(
                "add",
                ifname=host_ifname,
                kind="veth",
                peer={"ifname": CONTAINER_IFNAME, "net_ns_fd": netns_fd},
                master=bridge_index,
                state="up",
            )
    except NetworkError as e:
        if _code(e) == errno.EEXIST:
            e.hint = "a crashed run left it behind, or another run's name collides: `repeatr gc`"
        raise


def set_alias(ipr: Any, ifname: str, alias: str) -> None:
    with _netlink(f"naming the owner of veth {ifname}"):
        ipr.link("set", ifname=ifname, ifalias=alias)


def wait_link_gone(ifname: str, timeout: float = 2.0) -> bool:
    """Wait until ``ifname`` no longer exists (the kernel removes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while (_SYS_NET / ifname).exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def configure_inside(nsr: Any, address: IPv4Interface, gateway: IPv4Address) -> None:
    """In the run's namespace (``nsr`` is bound to it): address eth0, up, default route."""
    with _netlink(f"configuring {CONTAINER_IFNAME} in the run's namespace"):
        index = link_index(nsr, CONTAINER_IFNAME)
        if index is None:
            raise NetworkError(f"{CONTAINER_IFNAME} did not appear in the run's namespace")
        nsr.addr("add", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
        nsr.link("set", index=index, state="up")
        nsr.route("add", dst="0.0.0.0/0", gateway=str(gateway))


def delete_link(ipr: Any, ifname: str) -> bool:
    """Delete ``ifname`` (for a veth, both ends go); False if there was none.

    Takes 25-35 ms for a veth (the kernel waits for RCU): keep it off the
    run's critical path.
    """
    try:
        with _netlink(f"deleting interface {ifname}"):
            ipr.link("del", ifname=ifname)
    except NetworkError as e:
        if _code(e) in (errno.ENODEV, errno.ENOENT):
            return False
        raise
    return True


def host_links(prefix: str) -> dict[str, str]:
    """Interfaces of this network namespace named ``prefix*``, with their alias ("" if none).

    Read from sysfs, so it costs no netlink socket (and no pyroute2 import).
    """
    out = {}
    try:
        names = os.listdir(_SYS_NET)
    except FileNotFoundError:
        return {}
    for name in names:
        if not name.startswith(prefix):
            continue
        try:
            out[name] = (_SYS_NET / name / "ifalias").read_text().strip()
        except OSError:
            out[name] = ""
    return out
