"""Network policies through whole runs: traffic only between namespaces these tests create.

Every test here uses its own bridge and subnet (never ``repeatr0``), and a
fixture checks that no veth, network namespace or IP lease outlives it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import processes_with

from .conftest import Runner, wait_for

pytestmark = [pytest.mark.root, pytest.mark.network]

BRIDGE = "rprtestrun0"
SUBNET = ipaddress.IPv4Network("10.213.250.0/24")
GATEWAY = str(SUBNET.network_address + 1)
STATE = Path("/run/repeatr/net")


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _leases() -> list[str]:
    d = STATE / "rprtestrun0" / "leases"
    return sorted(os.listdir(d)) if d.is_dir() else []


@pytest.fixture
def bridged(runner: Runner) -> Iterator[Runner]:
    """The runner, with our test bridge; afterwards nothing of ours is left, bridge included."""
    links, netns = _links(), _netns()
    yield runner
    assert _leases() == [], "IP leases left behind"
    assert _links() - links - {BRIDGE} == set(), "veths left behind"
    assert _netns() - netns == set(), "network namespaces left behind"
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
    shutil.rmtree(STATE / "rprtestrun0", ignore_errors=True)


def job_out(stderr: str) -> list[str]:
    """The job's stdout lines, as the CLI streamed them."""
    return [line.removeprefix("out|").strip() for line in stderr.splitlines() if line.startswith("out|")]


def _net_args() -> tuple[str, ...]:
    return ("--bridge", BRIDGE, "--subnet", str(SUBNET), "--executor", "ns")


def test_none_sees_only_loopback(runner: Runner) -> None:
    f = runner.formula("/bin/sh", "-c", "ip -o link | cut -d: -f2", network="none")
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    assert job_out(res.stderr) == ["lo"]
    assert res.record()["network"] == "none"


def test_host_sees_the_hosts_links(runner: Runner) -> None:
    f = runner.formula("/bin/sh", "-c", "ip -o link | cut -d: -f2", network="host")
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    seen = set(job_out(res.stderr))
    assert "lo" in seen and len(seen & _links()) >= 2  # the host's own links
    assert res.record()["network"] == "host"


def test_chroot_refuses_isolated_networks(runner: Runner) -> None:
    f = runner.formula("/bin/true", network="none")
    res = runner.run("run", str(f), "--executor", "chroot")
    assert res.code == 42 and "network 'none'" in res.stderr


def test_two_bridged_jobs_talk(bridged: Runner, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    common = {
        "network": "bridge", "policy": "governor", "userinfo": {"uid": 0, "gid": 0},
        "inputs": {"/shared": f"mount:rw:{shared}"},
    }
    a = bridged.formula(
        "/bin/sh", "-c",
        "ip -o -4 addr show eth0 | sed 's/.*inet \\([0-9.]*\\).*/\\1/' > /shared/a.tmp && "
        "mv /shared/a.tmp /shared/a && nc -l -p 7000 > /shared/got && ping -c1 -W2 box-a",
        hostname="box-a", name="a.json", **common,
    )
    b = bridged.formula(
        "/bin/sh", "-c",
        "while [ ! -s /shared/a ]; do sleep 0.05; done; "
        f"ping -c1 -W2 {GATEWAY} && ping -c1 -W2 box-b && "
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo hello-from-b | nc $(cat /shared/a) 7000 && break; sleep 0.2; done",
        hostname="box-b", name="b.json", **common,
    )
    with bridged.start("run", str(a), *_net_args()) as pa, bridged.start("run", str(b), *_net_args()) as pb:
        out_b, err_b = pb.communicate(timeout=60)
        out_a, err_a = pa.communicate(timeout=60)
    assert pa.returncode == 0, err_a
    assert pb.returncode == 0, err_b
    assert (shared / "got").read_text() == "hello-from-b\n"
    rec_a, rec_b = json.loads(out_a), json.loads(out_b)
    assert rec_a["network"] == rec_b["network"] == "bridge"
    addresses = {rec_a["address"], rec_b["address"]}
    assert len(addresses) == 2 and all(ipaddress.ip_address(x) in SUBNET for x in addresses)
    assert (shared / "a").read_text().strip() == rec_a["address"]


def test_nameservers_and_hosts(bridged: Runner) -> None:
    f = bridged.formula(
        "/bin/sh", "-c", "cat /etc/resolv.conf; grep box-c /etc/hosts",
        network="bridge", hostname="box-c", nameservers=["192.0.2.53"],
    )
    res = bridged.run("run", str(f), *_net_args())
    assert res.code == 0, res.stderr
    assert "out| nameserver 192.0.2.53" in res.stderr
    assert f"out| {res.record()['address']}\tbox-c" in res.stderr


def test_sigkill_bridged_run_is_reclaimed(bridged: Runner) -> None:
    marker = "sleep 4545"
    f = bridged.formula("/bin/sh", "-c", marker, network="bridge")
    with bridged.start("run", str(f), *_net_args()) as proc:
        wait_for(lambda: bool(processes_with(marker)))
        assert len(_leases()) == 1
        proc.kill()
        proc.wait(timeout=10)
    assert len(_leases()) == 1  # left by the killed run...
    res = bridged.run("gc")
    assert res.code == 0, res.stderr
    assert "1 veths, 1 netns" in res.stdout  # ...and reclaimed by gc, with its veth and netns
    assert _leases() == []


def test_sigkill_bridged_run_is_reclaimed_by_next_run(bridged: Runner) -> None:
    marker = "sleep 4646"
    f = bridged.formula("/bin/sh", "-c", marker, network="bridge")
    with bridged.start("run", str(f), *_net_args()) as proc:
        wait_for(lambda: bool(processes_with(marker)))
        proc.kill()
        proc.wait(timeout=10)
    res = bridged.run("run", str(bridged.formula("/bin/true", name="t.json")), "--executor", "ns")
    assert res.code == 0 and "reclaimed the network of dead runs" in res.stderr


@pytest.mark.slow
def test_64_concurrent_bridged_runs(bridged: Runner, tmp_path: Path) -> None:
    """64 runs from xargs -P16: all succeed, no address is ever held by two at once."""
    held = tmp_path / "held"
    held.mkdir()
    os.chmod(held, 0o777)
    # Each job claims its address with noclobber (create-exclusive) while it runs:
    # a second job holding the same address at the same time would fail to.
    script = (
        "set -C; a=$(ip -o -4 addr show eth0 | sed 's/.*inet \\([0-9.]*\\).*/\\1/'); "
        "echo $$ > /held/$a || exit 99; sleep 0.3; rm /held/$a; echo $a"
    )
    paths = [
        bridged.formula(
            "/bin/sh", "-c", script, network="bridge", name=f"f{i}.json",
            inputs={"/held": f"mount:rw:{held}"},
        )
        for i in range(64)
    ]
    listing = "".join(f"{p}\n" for p in paths)
    proc = subprocess.run(
        ["xargs", "-P16", "-n1", sys.executable, "-m", "repeatr", "run", "--cache", str(bridged.state),
         "--format", "json", *_net_args()],
        input=listing, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    records = [e["record"] for e in events if e["event"] == "result"]
    assert len(records) == 64 and all(r["exitCode"] == 0 for r in records)
    assert all(r["network"] == "bridge" and ipaddress.ip_address(r["address"]) in SUBNET for r in records)
    assert os.listdir(held) == []


def test_nat_is_off_until_asked(bridged: Runner) -> None:
    """Only the ruleset is checked: no traffic ever leaves this machine."""
    args = ("--bridge", BRIDGE, "--subnet", str(SUBNET))
    table = f"repeatr_{BRIDGE}"

    def tables() -> str:
        return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout

    assert "off" in bridged.run("net", "nat", "status", *args).stdout
    try:
        assert "on" in bridged.run("net", "nat", "on", *args).stdout
        assert table in tables()
        rules = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, text=True).stdout
        assert "masquerade" in rules and str(SUBNET) in rules
    finally:
        bridged.run("net", "nat", "off", *args)
    assert table not in tables()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_record_is_reported_before_the_network_teardown(
    bridged: Runner, anyio_backend: str
) -> None:
    """The kernel's 25-35 ms veth deletion is off the critical path, and nothing leaks."""
    from repeatr.cache import Cache
    from repeatr.executors.base import load
    from repeatr.model.formula import load_formula_file
    from repeatr.model.runrecord import RunRecord, encode_pretty
    from repeatr.net.config import Network
    from repeatr.supervisor import NetSettings, RunEvents, run_formula

    before = _links()
    seen: list[tuple[dict[str, object], set[str], list[str]]] = []

    def finished(record: RunRecord) -> None:
        seen.append((json.loads(encode_pretty(record)), _links() - before - {BRIDGE}, _leases()))

    f = bridged.formula("/bin/true", network="bridge")
    outcome = await run_formula(
        load_formula_file(f),
        executor=load("ns")(),
        cache=Cache(bridged.state),
        events=RunEvents(finished=finished),
        net=NetSettings(network=Network(name=BRIDGE, bridge=BRIDGE, subnet=SUBNET)),
    )
    ((record, veths_then, leases_then),) = seen
    assert record["exitCode"] == 0 and record["network"] == "bridge"
    assert record["guid"] == outcome.record.guid
    assert len(veths_then) == 1 and len(leases_then) == 1  # reported while still attached
    assert _links() - before - {BRIDGE} == set() and _leases() == []  # gone on return
