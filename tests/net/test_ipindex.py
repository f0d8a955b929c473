"""The IP index: flock-guarded lease files, no kernel objects (runs without root)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from repeatr import locks
from repeatr.errors import Category, NetworkError, RepeatrError
from repeatr.net.ipindex import IPIndex, Lease
from repeatr.owner import Owner
from tests.net.conftest import REPO

SUBNET = IPv4Network("10.254.213.0/24")


def dead_owner() -> Owner:
    """The owner record of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    owner = Owner.of_pid(proc.pid)
    assert owner is not None
    proc.communicate(b"")
    assert not owner.is_alive()
    return owner


@pytest.fixture
def index(tmp_path: Path) -> IPIndex:
    return IPIndex(tmp_path, "t", SUBNET)


def test_distinct_addresses_never_gateway_network_or_broadcast(index: IPIndex) -> None:
    got = [index.allocate(f"r{i}") for i in range(index.capacity)]
    assert len({a.ip for a in got}) == len(got) == 253
    ips = {a.ip for a in got}
    assert SUBNET.network_address not in ips
    assert SUBNET.broadcast_address not in ips
    assert index.gateway.ip == IPv4Address("10.254.213.1") and index.gateway.ip not in ips
    assert all(a.network == SUBNET for a in got)
    assert got[0] == IPv4Interface("10.254.213.2/24")


def test_round_robin_wraps(tmp_path: Path) -> None:
    idx = IPIndex(tmp_path, "small", "10.254.213.0/29")  # .2 .. .6
    assert idx.capacity == 5
    first = [str(idx.allocate(f"a{i}").ip) for i in range(3)]
    assert first == ["10.254.213.2", "10.254.213.3", "10.254.213.4"]
    idx.release("a0")
    # Round robin: the freed .2 is not reused while later addresses are free.
    assert str(idx.allocate("b0").ip) == "10.254.213.5"
    assert str(idx.allocate("b1").ip) == "10.254.213.6"
    assert str(idx.allocate("b2").ip) == "10.254.213.2"  # wrapped


def test_full_range_error_names_network_and_live_count(tmp_path: Path) -> None:
    idx = IPIndex(tmp_path, "tiny", "10.254.213.0/30")  # one run address
    idx.allocate("only")
    with pytest.raises(NetworkError) as info:
        idx.allocate("another")
    assert info.value.category is Category.EXECUTOR
    assert "'tiny'" in str(info.value) and "1 of 1" in str(info.value)


def test_release_by_run_id_and_idempotent(index: IPIndex) -> None:
    a = index.allocate("r1")
    index.allocate("r2")
    assert index.lookup("r1") == a
    assert index.release("r1") == a
    assert index.release("r1") is None
    assert index.lookup("r1") is None
    assert [lease.run_id for lease in index.leases()] == ["r2"]
    assert not (index.dir / "leases" / str(a.ip)).exists()
    assert not (index.dir / "runs" / "r1").exists()


def test_release_never_scans_the_leases(index: IPIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    """O(1): release reads the run's reverse entry and its lease, never lists the directory."""
    for i in range(50):
        index.allocate(f"r{i}")

    def no_listing(path: object) -> list[str]:
        raise AssertionError(f"release listed {path}")

    monkeypatch.setattr(os, "listdir", no_listing)
    assert index.release("r25") == IPv4Interface("10.254.213.27/24")


def test_same_run_twice_is_an_error(index: IPIndex) -> None:
    index.allocate("r1")
    with pytest.raises(NetworkError):
        index.allocate("r1")


def test_lease_records_run_and_owner(index: IPIndex) -> None:
    a = index.allocate("r1")
    lines = (index.dir / "leases" / str(a.ip)).read_text().splitlines()
    assert lines == ["r1", str(Owner.current())]
    (lease,) = index.leases()
    assert lease == Lease(a, "r1", Owner.current())


def test_dead_owner_reclaimed_when_full(tmp_path: Path) -> None:
    idx = IPIndex(tmp_path, "tiny", "10.254.213.0/30")
    reclaimed: list[Lease] = []
    idx.on_reclaim = reclaimed.append
    a = idx.allocate("dead-run", dead_owner())
    b = idx.allocate("new-run")
    assert a == b
    assert [lease.run_id for lease in reclaimed] == ["dead-run"]
    assert idx.lookup("dead-run") is None
    assert [lease.run_id for lease in idx.leases()] == ["new-run"]


def test_live_owner_not_reclaimed(tmp_path: Path) -> None:
    idx = IPIndex(tmp_path, "tiny", "10.254.213.0/30")
    idx.allocate("live")
    with pytest.raises(NetworkError):
        idx.allocate("other")
    assert idx.gc() == []


def test_gc_reclaims_dead_owners_only(index: IPIndex) -> None:
    dead = dead_owner()
    index.allocate("d1", dead)
    keep = index.allocate("alive")
    index.allocate("d2", dead)
    reclaimed = index.gc()
    assert sorted(lease.run_id for lease in reclaimed) == ["d1", "d2"]
    assert [lease.address for lease in index.leases()] == [keep]
    assert index.lookup("d1") is None and index.lookup("d2") is None


def test_half_written_lease_is_stale(index: IPIndex) -> None:
    index.allocate("r1")
    (index.dir / "leases" / "10.254.213.77").write_text("")  # writer died mid-way
    assert [str(lease.address.ip) for lease in index.gc()] == ["10.254.213.77"]


def test_subnet_fixed_at_first_use(tmp_path: Path) -> None:
    IPIndex(tmp_path, "t", "10.254.213.0/24").allocate("r1")
    with pytest.raises(RepeatrError) as info:
        IPIndex(tmp_path, "t", "10.254.214.0/24").allocate("r2")
    assert info.value.category is Category.USAGE
    reopened = IPIndex.existing(tmp_path, "t")
    assert reopened is not None and reopened.subnet == SUBNET
    assert IPIndex.existing(tmp_path, "never") is None


def test_too_small_subnet_rejected(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError):
        IPIndex(tmp_path, "t", "10.254.213.0/31")


@pytest.mark.slow
def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    """16 processes x 50 allocations (half released at once): no address held twice at once."""
    workers, count = 16, 50
    subnet = "10.254.0.0/22"  # room for every lease held at once (16 x 25 < 1021)
    bar = tmp_path / "barrier"
    bar.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.net.workers", "index", str(tmp_path), "c", subnet,
             str(i), str(count), str(bar), str(tmp_path / f"out.{i}")],
            cwd=REPO,
        )
        for i in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(bar.glob("ready.*"))) < workers:
            assert time.monotonic() < deadline, "workers did not reach the barrier"
            assert all(p.poll() is None for p in procs), "a worker died before the barrier"
            time.sleep(0.01)
        (bar / "go").touch()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    by_addr: dict[str, list[tuple[int, int]]] = defaultdict(list)
    total = 0
    for i in range(workers):
        for line in (tmp_path / f"out.{i}").read_text().splitlines():
            rec = json.loads(line)
            by_addr[rec["addr"]].append((rec["got"], rec["rel"]))
            total += 1
    assert total == workers * count
    for addr, intervals in by_addr.items():
        intervals.sort()
        for (_, prev_end), (next_start, _) in itertools.pairwise(intervals):
            assert next_start >= prev_end, f"{addr} was handed out while still held"
    idx = IPIndex(tmp_path, "c", subnet)
    assert idx.leases() == []
    assert os.listdir(idx.dir / "runs") == []


def test_lock_timeout_names_the_holder(index: IPIndex, tmp_path: Path) -> None:
    index.allocate("r1")  # creates the directory and the lock file
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys; from repeatr.owner import Owner; "
         "fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
         "os.write(fd, f'{Owner.current()}\\n'.encode()); print('held', flush=True); "
         "sys.stdin.read()",
         str(index.dir / "lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        index.lock_timeout = 0.2
        with pytest.raises(locks.LockTimeout) as info:
            index.allocate("r2")
        assert info.value.category is Category.EXECUTOR
        assert "IP index of network 't'" in str(info.value)
        assert info.value.holder is not None and info.value.holder.pid == holder.pid
    finally:
        holder.communicate("")
    index.lock_timeout = 5
    assert index.allocate("r2") is not None
