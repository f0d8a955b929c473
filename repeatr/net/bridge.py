"""Links over rtnetlink (:mod:`repeatr.linux.rtnetlink`): the host bridge, a run's veth pair.

Every function takes an open :class:`~repeatr.linux.rtnetlink.RtNetlink`
and blocks: callers run them in a worker thread
(``anyio.to_thread.run_sync``), so both anyio backends work.

Why netlink and not ``ip -batch``: the same set-up with iproute2 takes three
processes (``ip netns add``, ``ip -batch`` for the host side, ``ip -n <ns>
-batch`` for the inside); here it is two sockets in one thread and no fork
or exec, with the kernel's errors as errno values, not output to parse.

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

from repeatr.errors import Category, NetworkError
from repeatr.linux.libc import IFF_UP
from repeatr.net.config import Network
from repeatr.owner import Owner

TYPE_CHECKING = False
if TYPE_CHECKING:  # every run's gc reads host_links(); only bridged runs speak netlink
    from repeatr.linux.rtnetlink import RtNetlink

#: Name of the container end of every veth pair, inside the run's namespace.
CONTAINER_IFNAME = "eth0"
_SYS_NET = Path("/sys/class/net")
_ALIAS = re.compile(r"repeatr run=(?P<run>\S+) owner=(?P<owner>\S+)")


def netlink() -> RtNetlink:
    """A netlink socket bound to the calling thread's network namespace."""
    from repeatr.linux.rtnetlink import RtNetlink

    try:
        return RtNetlink()
    except OSError as e:
        raise NetworkError(f"cannot open a netlink socket: {e}") from e


@contextmanager
def _netlink(what: str, *, hint: str | None = None) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise NetworkError(f"{what} failed: {e.strerror or e}", hint=hint) from e


def _code(exc: BaseException) -> int | None:
    cause = exc.__cause__
    return getattr(cause, "errno", None)


def ensure_bridge(nl: RtNetlink, network: Network) -> int:
    """The index of ``network``'s bridge, created with the gateway address if missing.

    Safe when many invocations race to create it: "exists" counts as
    success and the state is re-read. A bridge that exists with a different
    IPv4 address, or a name taken by a non-bridge link, is an error (two
    configurations disagree); so is a subnet that overlaps an address on
    another interface of the host (checked when the bridge is created).
    """
    name = network.bridge
    with _netlink(f"looking up interface {name}"):
        link = nl.link(name)
    if link is None:
        _check_subnet_free(nl, network)
        try:
            with _netlink(f"creating bridge {name}"):
                nl.add_bridge(name)
        except NetworkError as e:
            if _code(e) != errno.EEXIST:
                raise
        with _netlink(f"looking up interface {name}"):
            link = nl.link(name)
        if link is None:
            raise NetworkError(f"bridge {name} vanished right after it was created")
    if link.kind != "bridge":
        raise NetworkError(
            f"interface {name} exists but is a {link.kind or 'non-bridge'} link, not a bridge",
            category=Category.USAGE,
            hint="configure another bridge name for this network",
        )
    _ensure_gateway(nl, link.ifindex, network)
    if not link.flags & IFF_UP:
        with _netlink(f"setting bridge {name} up"):
            nl.set_up(link.ifindex)
    return link.ifindex


def _ipv4_addrs(nl: RtNetlink) -> list[tuple[int, str, IPv4Interface]]:
    """(interface index, label, address) of every IPv4 address."""
    with _netlink("listing addresses"):
        return [(a.ifindex, a.label, a.interface) for a in nl.addresses()]


def _ensure_gateway(nl: RtNetlink, index: int, network: Network) -> None:
    gw = network.gateway
    present = [iface for idx, _, iface in _ipv4_addrs(nl) if idx == index]
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
            nl.add_address(index, gw)
    except NetworkError as e:
        if _code(e) != errno.EEXIST:  # a racing creator added it first
            raise


def _check_subnet_free(nl: RtNetlink, network: Network) -> None:
    for _, label, iface in _ipv4_addrs(nl):
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


def add_veth(nl: RtNetlink, host_ifname: str, netns_fd: int, bridge_index: int) -> int:
    """A veth pair: ``host_ifname`` on the bridge and up, its peer ``eth0`` in ``netns_fd``.

    Returns the host end's index. Name its owner with :func:`set_alias`
    right after (the kernel ignores IFLA_IFALIAS in a create request). A
    crash in between leaves a veth without alias; its peer is in the run's
    namespace, so removing that namespace destroys it.
    """
    try:
        with _netlink(f"creating veth {host_ifname}"):
            nl.add_veth(
                host_ifname, peer=CONTAINER_IFNAME, peer_netns_fd=netns_fd, master=bridge_index
            )
    except NetworkError as e:
        if _code(e) == errno.EEXIST:
            e.hint = "a crashed run left it behind, or another run's name collides: `repeatr gc`"
        raise
    with _netlink(f"looking up veth {host_ifname}"):
        link = nl.link(host_ifname)
    if link is None:
        raise NetworkError(f"veth {host_ifname} vanished right after it was created")
    return link.ifindex


def set_alias(nl: RtNetlink, index: int, ifname: str, alias: str) -> None:
    with _netlink(f"naming the owner of veth {ifname}"):
        nl.set_alias(index, alias)


def wait_link_gone(ifname: str, timeout: float = 2.0) -> bool:
    """Wait until ``ifname`` no longer exists (the kernel removes it asynchronously)."""
    deadline = time.monotonic() + timeout
    while (_SYS_NET / ifname).exists():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def configure_inside(nsl: RtNetlink, address: IPv4Interface, gateway: IPv4Address) -> None:
    """In the run's namespace (``nsl`` is bound to it): address eth0, up, default route."""
    with _netlink(f"configuring {CONTAINER_IFNAME} in the run's namespace"):
        link = nsl.link(CONTAINER_IFNAME)
        if link is None:
            raise NetworkError(f"{CONTAINER_IFNAME} did not appear in the run's namespace")
        nsl.add_address(link.ifindex, address)
        nsl.set_up(link.ifindex)
        nsl.add_default_route(gateway)


def delete_link(nl: RtNetlink, ifname: str) -> bool:
    """Delete ``ifname`` (for a veth, both ends go); False if there was none.

    Takes 25-35 ms for a veth (the kernel waits for RCU): keep it off the
    run's critical path.
    """
    with _netlink(f"deleting interface {ifname}"):
        return nl.delete_link(ifname)


def host_links(prefix: str) -> dict[str, str]:
    """Interfaces of this network namespace named ``prefix*``, with their alias ("" if none).

    Read from sysfs, so it costs no netlink socket.
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
