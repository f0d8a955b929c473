"""prepare / teardown with real namespaces, veths and a test bridge; gc after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

import anyio
import msgspec
import pytest

from repeatr.errors import Category, NetworkError
from repeatr.net import gc, records
from repeatr.net.config import NetHost, Network, NetworkPolicy
from repeatr.net.ipindex import IPIndex
from repeatr.net.setup import attached, prepare, prepare_sync, teardown, teardown_sync
from tests.net.conftest import host_args, link_names, net_args, netns_names, start_worker

pytestmark = [pytest.mark.network, pytest.mark.root]


def in_ns(netns: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns.name, *argv], capture_output=True, text=True, timeout=10
    )


def ping(netns: Path, addr: object) -> bool:
    return in_ns(netns, "ping", "-c1", "-W1", str(addr)).returncode == 0


def ns_links(netns: Path) -> list[str]:
    out = in_ns(netns, "ip", "-o", "link").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def index_of(host: NetHost, net: Network) -> IPIndex:
    return IPIndex(host.state_dir, net.name, net.subnet)


def assert_gone(host: NetHost, net: Network | None, *run_ids: str) -> None:
    for run_id in run_ids:
        assert host.veth_name(run_id) not in link_names()
        assert host.netns_path(run_id).name not in netns_names()
        assert not host.netns_path(run_id).exists()
        assert records.lookup(host, run_id) is None
        if net is not None:
            assert index_of(host, net).lookup(run_id) is None


@pytest.mark.anyio
async def test_two_bridge_runs_reach_each_other_and_the_gateway(
    net_host: NetHost, network: Network
) -> None:
    a = await prepare("bridge", "run-a", "alpha", network=network, host=net_host)
    try:
        b = await prepare("bridge", "run-b", "beta", network=network, host=net_host)
        try:
            assert a.address is not None and b.address is not None and a.netns and b.netns
            assert a.address != b.address
            assert a.address in network.subnet.hosts() or a.address.network == network.subnet
            assert a.gateway == b.gateway == network.gateway_address
            assert sorted(ns_links(a.netns)) == ["eth0", "lo"]
            ok = await anyio.to_thread.run_sync(
                lambda: (
                    ping(a.netns, b.address.ip),  # type: ignore[union-attr]
                    ping(b.netns, a.address.ip),  # type: ignore[union-attr]
                    ping(a.netns, network.gateway_address),
                    ping(a.netns, "127.0.0.1"),
                )
            )
            assert ok == (True, True, True, True)
            route = in_ns(a.netns, "ip", "route", "show", "default").stdout
            assert f"via {network.gateway_address} dev eth0" in route
            assert f"{a.address.ip}\talpha" in a.hosts
            assert {lease.run_id for lease in index_of(net_host, network).leases()} == {
                "run-a",
                "run-b",
            }
        finally:
            await teardown(b)
    finally:
        await teardown(a)
    assert_gone(net_host, network, "run-a", "run-b")
    assert index_of(net_host, network).leases() == []


@pytest.mark.anyio
async def test_none_has_only_loopback(net_host: NetHost) -> None:
    async with attached(NetworkPolicy.NONE, "run-none", "box", host=net_host) as att:
        assert att.netns is not None and att.address is None and att.veth is None
        assert ns_links(att.netns) == ["lo"]
        assert "state UNKNOWN" in in_ns(att.netns, "ip", "-o", "link", "show", "lo").stdout
        assert ping(att.netns, "127.0.0.1")
        assert not [ln for ln in att.resolv_conf.splitlines() if ln.startswith("nameserver")]
    assert_gone(net_host, None, "run-none")


@pytest.mark.anyio
async def test_host_prepares_nothing(net_host: NetHost) -> None:
    before = link_names()
    async with attached("host", "run-host", "box", host=net_host) as att:
        assert att.netns is None and att.address is None
        assert link_names() == before
        assert not net_host.records_dir.exists() or not os.listdir(net_host.records_dir)


@pytest.mark.anyio
async def test_cancelled_prepare_leaves_nothing(net_host: NetHost, network: Network) -> None:
    with anyio.move_on_after(0):
        await prepare("bridge", "run-cancel", "box", network=network, host=net_host)
        pytest.fail("prepare should have been cancelled")
    assert_gone(net_host, network, "run-cancel")


def test_teardown_is_idempotent(net_host: NetHost, network: Network) -> None:
    att = prepare_sync("bridge", "run-twice", "box", network=network, host=net_host)
    teardown_sync(att)
    teardown_sync(att)
    assert_gone(net_host, network, "run-twice")


def test_failed_prepare_cleans_up(net_host: NetHost, network: Network) -> None:
    """A veth name already taken: prepare fails and undoes the namespace and lease."""
    squatter = net_host.veth_name("run-clash")
    subprocess.run(["ip", "link", "add", squatter, "type", "bridge"], check=True)
    try:
        with pytest.raises(NetworkError) as info:
            prepare_sync("bridge", "run-clash", "box", network=network, host=net_host)
        assert info.value.category is Category.EXECUTOR
        assert net_host.netns_path("run-clash").name not in netns_names()
        assert index_of(net_host, network).lookup("run-clash") is None
        assert records.lookup(net_host, "run-clash") is None
    finally:
        subprocess.run(["ip", "link", "del", squatter], check=True)


def test_bridge_with_foreign_address_is_refused(
    net_host: NetHost, make_network: Callable[..., Network]
) -> None:
    net = make_network()
    subprocess.run(["ip", "link", "add", net.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.254.99.1/24", "dev", net.bridge], check=True)
    with pytest.raises(NetworkError) as info:
        prepare_sync("bridge", "run-x", "box", network=net, host=net_host)
    assert info.value.category is Category.USAGE
    assert_gone(net_host, net, "run-x")


def test_racing_creators_share_one_bridge(
    net_host: NetHost, network: Network, tmp_path: Path
) -> None:
    """8 processes prepare on a bridge that does not exist yet, all at once: all succeed."""
    bar = tmp_path / "barrier"
    bar.mkdir()
    procs = [
        start_worker("race", host_args(net_host), net_args(network), f"racer{i}", str(bar))
        for i in range(8)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(bar.glob("ready.*"))) < len(procs):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (bar / "go").touch()
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * len(procs)
        assert outputs == ["ok\n"] * len(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    addrs = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", network.bridge],
        capture_output=True, text=True, check=True,
    ).stdout
    assert addrs.count("inet ") == 1 and str(network.gateway) in addrs
    assert_gone(net_host, network, *(f"racer{i}" for i in range(8)))


def hold(
    host: NetHost, net: Network, policy: str, run_id: str
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = start_worker("hold", host_args(host), net_args(net), policy, run_id)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "holder died before reporting"
    return proc, json.loads(line)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()


def test_gc_after_sigkill(net_host: NetHost, network: Network) -> None:
    proc, info = hold(net_host, network, "bridge", "run-killed")
    try:
        assert info["veth"] in link_names()
        assert Path(info["netns"]).name in netns_names()
        live = gc.collect(net_host)
        assert live.empty, "gc must not touch a live run"
    finally:
        kill(proc)
    assert index_of(net_host, network).lookup("run-killed") == IPv4Interface(info["address"])
    report = gc.collect(net_host)
    assert report.runs == ["run-killed"]
    assert report.links == [info["veth"]]
    assert report.namespaces == [Path(info["netns"])]
    assert report.failures == []
    assert_gone(net_host, network, "run-killed")
    assert gc.collect(net_host).empty


def test_gc_after_sigkill_none_policy(net_host: NetHost, network: Network) -> None:
    proc, info = hold(net_host, network, "none", "run-killed-none")
    kill(proc)
    report = gc.collect(net_host)
    assert report.namespaces == [Path(info["netns"])]
    assert_gone(net_host, None, "run-killed-none")


def test_full_range_reclaims_a_killed_runs_veth_and_namespace(
    net_host: NetHost, make_network: Callable[..., Network]
) -> None:
    """A /30 holds one run: a new run takes the dead one's address only after its veth is gone."""
    net = make_network("tiny", prefixlen=30)
    proc, info = hold(net_host, net, "bridge", "run-old")
    kill(proc)
    assert info["veth"] in link_names()
    att = prepare_sync("bridge", "run-new", "box", network=net, host=net_host)
    try:
        assert str(att.address) == info["address"]
        assert info["veth"] not in link_names()
        assert Path(info["netns"]).name not in netns_names()
        assert records.lookup(net_host, "run-old") is None
        assert att.netns is not None and ping(att.netns, net.gateway_address)
    finally:
        teardown_sync(att)
    assert_gone(net_host, net, "run-old", "run-new")


def test_gc_removes_veth_named_by_alias_without_record(
    net_host: NetHost, network: Network
) -> None:
    proc, info = hold(net_host, network, "bridge", "run-lost")
    kill(proc)
    records.remove(net_host, "run-lost")  # as if removed by hand
    report = gc.collect(net_host)
    assert info["veth"] in report.links
    assert Path(info["netns"]) in report.namespaces
    assert [lease.run_id for lease in report.leases] == ["run-lost"]
    assert_gone(net_host, network, "run-lost")


def test_full_network_error(net_host: NetHost, make_network: Callable[..., Network]) -> None:
    net = make_network("tiny", prefixlen=30)
    att = prepare_sync("bridge", "run-1", "box", network=net, host=net_host)
    try:
        with pytest.raises(NetworkError) as info:
            prepare_sync("bridge", "run-2", "box", network=net, host=net_host)
        assert "'tiny'" in str(info.value)
        assert_gone(net_host, None, "run-2")
    finally:
        teardown_sync(att)


def test_same_run_id_twice_is_refused_and_harmless(net_host: NetHost, network: Network) -> None:
    att = prepare_sync("bridge", "run-dup", "box", network=network, host=net_host)
    try:
        with pytest.raises(NetworkError) as info:
            prepare_sync("bridge", "run-dup", "box", network=network, host=net_host)
        assert info.value.category is Category.INTERNAL
        assert att.netns is not None and ping(att.netns, network.gateway_address)
        assert index_of(net_host, network).lookup("run-dup") == att.address
    finally:
        teardown_sync(att)
    assert_gone(net_host, network, "run-dup")


def test_subnet_overlapping_a_host_address_is_refused(
    net_host: NetHost, make_network: Callable[..., Network]
) -> None:
    taken = make_network("first")
    squat = make_network("second")  # same test subnet, another bridge
    subprocess.run(["ip", "link", "add", taken.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", str(taken.gateway), "dev", taken.bridge], check=True)
    with pytest.raises(NetworkError) as info:
        prepare_sync("bridge", "run-overlap", "box", network=squat, host=net_host)
    assert info.value.category is Category.USAGE
    assert squat.bridge not in link_names()
    assert_gone(net_host, squat, "run-overlap")


def test_thread_returns_to_its_namespace_even_on_error(net_host: NetHost) -> None:
    from repeatr.net import netns

    mine = os.readlink("/proc/thread-self/ns/net")
    path = net_host.netns_path("run-boom")
    netns.ensure_netns_dir(net_host.netns_dir)
    with pytest.raises(RuntimeError), netns.inside_new_netns(path):
        assert os.readlink("/proc/thread-self/ns/net") != mine
        raise RuntimeError("boom")
    assert os.readlink("/proc/thread-self/ns/net") == mine
    assert not path.exists()


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split()[4] for line in f)


def _mount_points_of(pid: int) -> list[str]:
    with open(f"/proc/{pid}/mountinfo") as f:
        return [line.split()[4] for line in f]


def test_namespaces_make_no_host_mount_but_their_own_files(
    net_host: NetHost, network: Network, tmp_path: Path
) -> None:
    """On a fresh host the namespace dir stays a plain directory (``ip netns add``
    would make it a shared bind mount for good), and a copy of a run's namespace
    that another mount namespace took still goes with teardown: what that shared
    mount was for."""
    host = msgspec.structs.replace(net_host, netns_dir=tmp_path / "netns")
    before = _mount_points()
    att = prepare_sync("bridge", "run-mnt", "box", network=network, host=host)
    holder = None
    try:
        assert att.netns is not None
        assert sorted(set(_mount_points()) - set(before)) == [os.fspath(att.netns)]
        # A process in a private mount namespace made now holds a copy of the nsfs mount.
        holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "60"])
        mine = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/mnt") == mine:
            assert time.monotonic() < deadline, "unshare did not start"
            time.sleep(0.01)
        assert os.fspath(att.netns) in _mount_points_of(holder.pid)
    finally:
        teardown_sync(att)
    try:
        assert os.fspath(att.netns) not in _mount_points_of(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    assert _mount_points() == before
    assert_gone(host, network, "run-mnt")


def test_namespaces_allow_unprivileged_ping_and_the_host_keeps_its_setting(
    net_host: NetHost, network: Network
) -> None:
    """Every namespace repeatr.net makes lets any group open ICMP echo sockets
    (``net.ipv4.ping_group_range``, as Docker and Podman set it); the host's own
    value is left alone."""
    knob = Path("/proc/sys/net/ipv4/ping_group_range")
    host_value = knob.read_text()
    bridged = prepare_sync("bridge", "run-ping-b", "box", network=network, host=net_host)
    try:
        none = prepare_sync("none", "run-ping-n", "box", host=net_host)
        try:
            for att, address in ((bridged, network.gateway_address), (none, "127.0.0.1")):
                assert att.netns is not None
                assert in_ns(att.netns, "cat", os.fspath(knob)).stdout.split() == [
                    "0", "2147483647"
                ]
                # As nobody, without privileges (no_new_privs: ping's file capability is
                # ignored): only an ICMP datagram socket can work.
                ping = in_ns(
                    att.netns, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--no-new-privs", "ping", "-c1", "-W2", str(address),
                )  # fmt: skip
                assert ping.returncode == 0, ping.stderr
        finally:
            teardown_sync(none)
    finally:
        teardown_sync(bridged)
    assert knob.read_text() == host_value
