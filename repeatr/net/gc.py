"""Reclaim the network leftovers of runs whose process died (SIGKILL, power loss of a VM, ...).

What counts as dead: the :class:`~repeatr.owner.Owner` recorded with the
object is no longer alive (same host, and the pid is gone or reused).
``repeatr gc`` and the start of every invocation call :func:`collect`
(or :func:`gc` from async code). In order:

1. attachment records (``runs.d/<run_id>``) of dead owners: delete the
   veth, then the namespace, then free the lease, then drop the record;
2. veths named ``<veth_prefix><8 hex>`` whose alias names a dead owner
   (a record that was lost or removed by hand);
3. namespace files ``<netns_dir>/<netns_prefix>*`` with no record (a record
   is written before its namespace and removed after it, so such a file
   belongs to no live run);
4. every network's IP index: leases of dead owners (the index's own gc,
   which removes a run's veth and namespace first if a record names them).

Leases go last: an address is free only once nothing configures it. Every
step is idempotent, so two invocations collecting at once only repeat
each other's work. Errors on one object do not stop the others; they are
listed in :attr:`GCReport.failures`.

A gc with nothing to reclaim reads a few directories and ``/sys/class/net``
and opens no netlink socket.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from repeatr.errors import RepeatrError
from repeatr.net import NETNS_DIR, NETNS_PREFIX, STATE_DIR, VETH_PREFIX

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.net.config import NetHost
    from repeatr.net.ipindex import Lease

# Every run calls collect() and usually finds nothing (idle): the network modules,
# the IP index and the teardown code (with netlink) are imported only once there is
# something to look at.


class GCReport(msgspec.Struct):
    """What :func:`collect` removed (human-readable names) and what it could not."""

    runs: list[str] = msgspec.field(default_factory=list)
    links: list[str] = msgspec.field(default_factory=list)
    namespaces: list[Path] = msgspec.field(default_factory=list)
    leases: list[Lease] = msgspec.field(default_factory=list)
    failures: list[str] = msgspec.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.runs or self.links or self.namespaces or self.leases or self.failures)


def idle(host: NetHost | None = None) -> bool:
    """Nothing for :func:`collect` to look at: no attachment record, no lease, no
    interface or namespace named as ours. A few directory listings, no imports."""
    if host is None:
        state, ns_dir, ns_prefix, veth_prefix = STATE_DIR, NETNS_DIR, NETNS_PREFIX, VETH_PREFIX
    else:
        state, ns_dir = os.fspath(host.state_dir), os.fspath(host.netns_dir)
        ns_prefix, veth_prefix = host.netns_prefix, host.veth_prefix
    for name in _listdir(state):
        path = os.path.join(state, name)
        if name == "runs.d":  # the records (NetHost.records_dir)
            if _listdir(path):
                return False
        elif os.path.isfile(os.path.join(path, "subnet")) and not _empty(Path(path)):
            return False
    return not any(n.startswith(veth_prefix) for n in _listdir("/sys/class/net")) and not any(
        n.startswith(ns_prefix) for n in _listdir(ns_dir)
    )


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def collect(host: NetHost | None = None) -> GCReport:
    """Blocking gc (see the module doc): call from a worker thread or a sync CLI.
    ``host``: None for the default (``repeatr.net.config.DEFAULT_HOST``)."""
    report = GCReport()
    if idle(host):
        return report
    from repeatr.net.config import DEFAULT_HOST

    host = host or DEFAULT_HOST
    live_runs = _records(host, report)
    _veths(host, report)
    _namespaces(host, live_runs, report)
    _leases(host, report)
    return report


async def gc(host: NetHost | None = None) -> GCReport:
    """:func:`collect` in a worker thread."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(collect, host)


def _records(host: NetHost, report: GCReport) -> set[str]:
    """Tear down runs with dead owners; return the run IDs of every remaining record."""
    from repeatr.net import records

    remaining = set()
    for record in records.all_records(host):
        if record.owner_alive():
            remaining.add(record.run_id)
            continue
        from repeatr.net.ipindex import IPIndex
        from repeatr.net.setup import remove_run_objects

        try:
            gone = remove_run_objects(
                host,
                record.run_id,
                veth=record.veth,
                netns_path=Path(record.netns) if record.netns else None,
            )
            if record.network is not None:
                index = IPIndex.existing(
                    host.state_dir, record.network, lock_timeout=host.lock_timeout
                )
                if index is not None:
                    lease = index.release(record.run_id)
                    if lease is not None:
                        gone.append(f"lease {lease.ip}")
            records.remove(host, record.run_id)
        except RepeatrError as e:
            report.failures.append(f"run {record.run_id}: {e}")
            remaining.add(record.run_id)
            continue
        report.runs.append(record.run_id)
        report.links.extend(x.removeprefix("veth ") for x in gone if x.startswith("veth "))
        report.namespaces.extend(
            Path(x.removeprefix("netns ")) for x in gone if x.startswith("netns ")
        )
    return remaining


def _veths(host: NetHost, report: GCReport) -> None:
    from repeatr.net import bridge

    doomed = []
    for name, alias in bridge.host_links(host.veth_prefix).items():
        if not host.is_our_veth(name):
            continue
        parsed = bridge.parse_alias(alias)
        owner = parsed[1] if parsed else None
        if owner is not None and not owner.is_alive():
            doomed.append(name)
    if not doomed:
        return
    with bridge.netlink() as nl:
        for name in doomed:
            try:
                if bridge.delete_link(nl, name):
                    report.links.append(name)
            except RepeatrError as e:
                report.failures.append(f"veth {name}: {e}")


def _namespaces(host: NetHost, live_runs: set[str], report: GCReport) -> None:
    from repeatr.net import netns, records

    try:
        names = os.listdir(host.netns_dir)
    except FileNotFoundError:
        return
    for name in names:
        run_id = name.removeprefix(host.netns_prefix)
        if run_id == name or run_id in live_runs:
            continue
        path = host.netns_dir / name
        # Re-check: a run that started after the listing wrote its record first.
        if records.lookup(host, run_id) is not None:
            continue
        try:
            if netns.remove(path):
                report.namespaces.append(path)
        except OSError as e:
            report.failures.append(f"netns {path}: {e}")


def _leases(host: NetHost, report: GCReport) -> None:
    try:
        names = os.listdir(host.state_dir)
    except FileNotFoundError:
        return
    for name in sorted(names):
        if not (host.state_dir / name / "subnet").is_file() or _empty(host.state_dir / name):
            continue
        from repeatr.net.ipindex import IPIndex
        from repeatr.net.setup import reclaim_hook

        try:
            index = IPIndex.existing(
                host.state_dir, name, lock_timeout=host.lock_timeout, on_reclaim=reclaim_hook(host)
            )
            if index is not None:
                report.leases.extend(index.gc())
        except RepeatrError as e:
            report.failures.append(f"IP index of network {name!r}: {e}")


def _empty(network_dir: Path) -> bool:
    """Does this network's index hold no lease at all (nothing for its gc)?"""
    try:
        return not os.listdir(network_dir / "leases")
    except FileNotFoundError:
        return True
