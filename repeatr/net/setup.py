"""Prepare a run's network before launch; tear it down after.

``prepare`` returns a :class:`NetAttachment`: the path of the network
namespace the executor joins (``setns`` on the nsfs file, or the OCI
spec's ``linux.namespaces[type=network].path``), the run's address and
gateway, and the contents of ``/etc/resolv.conf`` and ``/etc/hosts`` for
the assembly to bind into the container.

Per policy:

- ``host``: nothing is created; the files come from the host.
- ``none``: a fresh namespace with only ``lo``, up. (The ns executor makes
  its own; OCI runtimes take this path.)
- ``bridge``: an address leased from the IP index, the host bridge
  (created on first use), a namespace holding ``eth0`` (one end of a veth
  pair whose other end is on the bridge) with the address and a default
  route via the gateway, and ``lo`` up.

Order, so that a crash at any point leaves something :mod:`repeatr.net.gc`
can find and undo: attachment record → lease → namespace → veth. Teardown
goes the other way: veth (both ends) → namespace → lease → record. The
lease is freed only once the link is gone, so its address is never in use
twice. Deleting a veth takes 25-35 ms in the kernel; that is teardown's
cost, paid in the run's teardown phase, not on the path to launch.

The blocking work runs in a worker thread (``anyio.to_thread.run_sync``),
so both anyio backends work; the ``*_sync`` functions are the same steps
for callers already in a thread (``repeatr gc``, scripts).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import NamedTuple

from repeatr.errors import NetworkError, RepeatrError
from repeatr.linux import libc, sysctl
from repeatr.net import bridge, dns, netns, records
from repeatr.net.config import (
    DEFAULT_HOST,
    DEFAULT_NETWORK,
    NetHost,
    Network,
    NetworkPolicy,
    check_run_id,
)
from repeatr.net.ipindex import IPIndex, Lease, ReclaimHook
from repeatr.owner import Owner

#: How long teardown may take before it gives up (leaving the rest to gc).
TEARDOWN_TIMEOUT = 30.0


class NetAttachment(NamedTuple):  # not a dataclass: ~1 ms less to import on a bridged run
    """A run's prepared network (see the module doc)."""

    policy: NetworkPolicy
    run_id: str
    hostname: str
    #: nsfs file to join with setns(CLONE_NEWNET); None for ``host``.
    netns: Path | None
    #: The run's address on the bridge (with prefix length); ``bridge`` only.
    address: IPv4Interface | None
    #: The bridge's address, the run's default route; ``bridge`` only.
    gateway: IPv4Address | None
    resolv_conf: str
    hosts: str
    #: Host end of the veth pair; ``bridge`` only.
    veth: str | None = None
    network: Network | None = None
    host: NetHost = DEFAULT_HOST
    owner: Owner | None = None


def prepare_sync(
    policy: NetworkPolicy | str,
    run_id: str,
    hostname: str = "",
    *,
    network: Network = DEFAULT_NETWORK,
    host: NetHost = DEFAULT_HOST,
    nameservers: Sequence[str] | None = None,
    owner: Owner | None = None,
) -> NetAttachment:
    """Blocking :func:`prepare`: call from a worker thread."""
    policy = NetworkPolicy.parse(policy) if isinstance(policy, str) else policy
    check_run_id(run_id)
    if nameservers:
        nameservers = dns.check_nameservers(nameservers)
    resolv = dns.resolv_conf(policy, nameservers)
    if policy is NetworkPolicy.HOST:
        return NetAttachment(
            policy, run_id, hostname, None, None, None, resolv, dns.hosts(hostname), host=host
        )
    owner = owner or Owner.current()
    path = host.netns_path(run_id)
    is_bridge = policy is NetworkPolicy.BRIDGE
    att = NetAttachment(
        policy,
        run_id,
        hostname,
        path,
        None,
        network.gateway_address if is_bridge else None,
        resolv,
        dns.hosts(hostname),
        veth=host.veth_name(run_id) if is_bridge else None,
        network=network if is_bridge else None,
        host=host,
        owner=owner,
    )
    record = records.AttachRecord(
        run_id=run_id,
        owner=str(owner),
        policy=policy.value,
        netns=str(path),
        veth=att.veth,
        network=network.name if is_bridge else None,
        subnet=str(network.subnet) if is_bridge else None,
    )
    try:
        records.write(host, record)
    except OSError as e:
        raise NetworkError(
            f"cannot record run {run_id}'s network in {host.records_dir}: {e}"
        ) from e
    created: list[str] = []
    try:
        if is_bridge:
            return _prepare_bridge(att, network, host, owner, created)
        _prepare_none(path, host)
        return att
    except BaseException as e:
        try:
            # Never delete an interface of that name that this run did not create.
            teardown_sync(att if "veth" in created else att._replace(veth=None))
        except (RepeatrError, OSError) as cleanup:
            e.add_note(f"cleaning up also failed (run `repeatr gc`): {cleanup}")
        raise


def _prepare_none(path: Path, host: NetHost) -> None:
    try:
        netns.ensure_netns_dir(host.netns_dir)
        with netns.inside_new_netns(path):
            _set_up_inside()
    except OSError as e:
        raise NetworkError(f"cannot create network namespace {path}: {e}") from e


def _set_up_inside() -> None:
    """In a new namespace (this thread is in it): ``lo`` up, unprivileged ping allowed."""
    libc.link_up("lo")
    sysctl.configure_netns()


def _prepare_bridge(
    att: NetAttachment, network: Network, host: NetHost, owner: Owner, created: list[str]
) -> NetAttachment:
    path, veth, gateway = att.netns, att.veth, att.gateway
    assert path is not None and veth is not None and gateway is not None
    address = _index(network, host).allocate(att.run_id, owner)
    att = att._replace(address=address, hosts=dns.hosts(att.hostname, address.ip))
    nl = bridge.netlink()  # bound to the host's namespace: this thread is in it now
    nsl = None
    try:
        bridge_index = bridge.ensure_bridge(nl, network)
        try:
            netns.ensure_netns_dir(host.netns_dir)
            with netns.inside_new_netns(path):
                _set_up_inside()
                nsl = bridge.netlink()  # bound to the run's namespace from now on
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise NetworkError(f"cannot create network namespace {path}: {e}") from e
        try:
            index = bridge.add_veth(nl, veth, nsfd, bridge_index)
        finally:
            os.close(nsfd)
        created.append("veth")
        bridge.set_alias(nl, index, veth, bridge.alias(att.run_id, owner))
        bridge.configure_inside(nsl, address, gateway)
    finally:
        nl.close()
        if nsl is not None:
            nsl.close()
    return att


def _index(network: Network, host: NetHost) -> IPIndex:
    return IPIndex(
        host.state_dir,
        network.name,
        network.subnet,
        lock_timeout=host.lock_timeout,
        on_reclaim=reclaim_hook(host),
    )


def teardown_sync(att: NetAttachment) -> None:
    """Blocking :func:`teardown`: call from a worker thread. Idempotent.

    Stops at the first step that fails, keeping the lease and the record so
    that gc retries later (never free an address still configured somewhere).
    """
    if att.policy is NetworkPolicy.HOST:
        return
    remove_run_objects(att.host, att.run_id, veth=att.veth, netns_path=att.netns)
    if att.network is not None:
        _index(att.network, att.host).release(att.run_id)
    records.remove(att.host, att.run_id)


def remove_run_objects(
    host: NetHost, run_id: str, *, veth: str | None, netns_path: Path | None
) -> list[str]:
    """Delete a run's veth, then its namespace; returns what was there. Idempotent.

    The veth is deleted only if its alias names ``run_id``: an interface of
    the same name that this run did not create (a failed prepare, a hash
    collision with another run) is left alone. A veth without alias (its
    creator died before naming it) goes with the namespace holding its
    peer; this waits until it has gone, so that the lease can be freed.
    """
    removed = []
    alias = bridge.host_links(veth).get(veth) if veth is not None else None
    if veth is not None and alias is not None and bridge.alias_run(alias) == run_id:
        with bridge.netlink() as nl:
            if bridge.delete_link(nl, veth):
                removed.append(f"veth {veth}")
    if netns_path is not None:
        try:
            if netns.remove(netns_path):
                removed.append(f"netns {netns_path}")
        except OSError as e:
            raise NetworkError(
                f"cannot remove network namespace {netns_path} of run {run_id}: {e}"
            ) from e
    if veth is not None and alias == "" and not bridge.wait_link_gone(veth):
        raise NetworkError(
            f"veth {veth} of run {run_id} is still there after its namespace was removed",
            hint=f"if no run uses it, remove it with `ip link del {veth}`",
        )
    return removed


def reclaim_hook(host: NetHost) -> ReclaimHook:
    """For the IP index: before a dead run's lease goes, remove its veth and namespace."""

    def hook(lease: Lease) -> None:
        record = records.lookup(host, lease.run_id) if lease.run_id else None
        if record is None:
            return
        remove_run_objects(
            host,
            lease.run_id,
            veth=record.veth,
            netns_path=Path(record.netns) if record.netns else None,
        )
        records.remove(host, lease.run_id)

    return hook


async def prepare(
    policy: NetworkPolicy | str,
    run_id: str,
    hostname: str = "",
    *,
    network: Network = DEFAULT_NETWORK,
    host: NetHost = DEFAULT_HOST,
    nameservers: Sequence[str] | None = None,
    owner: Owner | None = None,
) -> NetAttachment:
    """Prepare the network of run ``run_id`` (see the module doc).

    The caller owns the result and must :func:`teardown` it (or use
    :func:`attached`). If the caller is cancelled while this runs, the
    preparation finishes (a few ms; at worst the IP index lock timeout),
    is torn down, and the cancellation is re-raised.
    """

    import anyio  # here: a lean single run's gc reaches this module, never an event loop

    def work() -> NetAttachment:
        return prepare_sync(
            policy,
            run_id,
            hostname,
            network=network,
            host=host,
            nameservers=nameservers,
            owner=owner,
        )

    with anyio.CancelScope(shield=True):
        att = await anyio.to_thread.run_sync(work)
    try:
        await anyio.lowlevel.checkpoint()
    except BaseException:
        await teardown(att)
        raise
    return att


async def teardown(att: NetAttachment) -> None:
    """Remove a run's network: veth, namespace, then lease and record.

    Shielded from cancellation, bounded by :data:`TEARDOWN_TIMEOUT`; on timeout the work
    left over is gc's (the record stays until everything is gone).
    """
    if att.policy is NetworkPolicy.HOST:
        return
    import anyio

    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(TEARDOWN_TIMEOUT) as scope:
            await anyio.to_thread.run_sync(teardown_sync, att, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise NetworkError(
                f"tearing down the network of run {att.run_id} took more than "
                f"{TEARDOWN_TIMEOUT:g}s",
                hint="`repeatr gc` removes what is left once this process has exited",
            )


@asynccontextmanager
async def attached(
    policy: NetworkPolicy | str,
    run_id: str,
    hostname: str = "",
    *,
    network: Network = DEFAULT_NETWORK,
    host: NetHost = DEFAULT_HOST,
    nameservers: Sequence[str] | None = None,
) -> AsyncIterator[NetAttachment]:
    """``prepare`` for the block, ``teardown`` after it (also on error and cancellation)."""
    att = await prepare(
        policy, run_id, hostname, network=network, host=host, nameservers=nameservers
    )
    try:
        yield att
    finally:
        await teardown(att)

