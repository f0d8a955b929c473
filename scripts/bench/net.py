#!/usr/bin/env python3
"""Benchmark a run's network: prepare / teardown per policy, and the IP index under contention.

Run as root: ``.venv/bin/python scripts/bench/net.py [--runs 30] [--workers 16]``.

Everything happens on a private test subnet and a bench-only bridge
(``rpbbench0``, veths ``rpb*``, namespaces ``/run/netns/rprbench-*``), with
the state directory on a tmpfs this script mounts; nothing talks to any
outside address, and everything is removed at the end, whatever happens.

Prints, as medians (and 90th percentiles) of ``--runs`` runs:

* a warm ``repeatr run`` of /bin/true (ns executor, memo off) with network
  ``host``, ``none`` and ``bridge``, interleaved: until the run record is on
  stdout (the critical path; goal: bridge <= host + 10 ms) and until the
  process exited (teardown included: deleting a veth takes the kernel
  25-35 ms, after the record);
* ``none`` and ``bridge``: prepare and teardown alone, through the sync API
  and through ``await prepare()`` on asyncio and trio (the thread hop
  included);
* the IP index: allocate+release pairs per second with 1 process and
  with ``--workers`` processes started together at a barrier, for the
  index's own lock polling and for :func:`repeatr.locks.acquire`'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from repeatr import locks
from repeatr.errors import Category
from repeatr.linux import libc
from repeatr.net.config import DEFAULT_HOST, NetHost, Network
from repeatr.net.ipindex import IPIndex
from repeatr.owner import Owner

GOAL_MS = 10.0
BRIDGE = "rpbbench0"
CANDIDATES = ["10.254.214.0/24", "10.253.214.0/24", "172.30.214.0/24"]
INDEX_SUBNET = "10.254.0.0/20"  # the index alone touches no kernel object


class PollingIndex(IPIndex):
    """The same index, locked with repeatr.locks.acquire (10-200 ms polling) for comparison."""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(
            self.dir / "lock", resource="bench index", timeout=60, category=Category.EXECUTOR
        ):
            self._ensure_dir()
            yield


def free_subnet() -> IPv4Network:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    taken = [IPv4Interface(line.split()[3]).network for line in out.splitlines()]
    for text in CANDIDATES:
        net = IPv4Network(text)
        if not any(net.overlaps(t) for t in taken):
            return net
    raise SystemExit(f"every candidate bench subnet overlaps a host address: {CANDIDATES}")


def ms(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"median {statistics.median(values) * 1000:6.2f} ms   p90 {p90 * 1000:6.2f} ms"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bench_policy(policy: str, runs: int, net: Network, host: NetHost) -> tuple[list[float], ...]:
    from repeatr.net.setup import prepare_sync, teardown_sync

    prep, down = [], []
    for i in range(runs):
        run_id = f"bench-{policy}-{i}"
        t, att = timed(
            lambda run_id=run_id: prepare_sync(policy, run_id, "b", network=net, host=host)
        )
        prep.append(t)
        t, _ = timed(lambda att=att: teardown_sync(att))  # type: ignore[arg-type]
        down.append(t)
    return prep, down


def bench_async(policy: str, runs: int, net: Network, host: NetHost, backend: str) -> list[float]:
    import anyio

    from repeatr.net.setup import prepare, teardown

    async def main() -> list[float]:
        out = []
        for i in range(runs):
            start = time.perf_counter()
            att = await prepare(policy, f"bench-a{backend}-{i}", "b", network=net, host=host)
            out.append(time.perf_counter() - start)
            await teardown(att)
        return out

    return anyio.run(main, backend=backend)


def bench_runs(runs: int, net: Network) -> None:
    """Warm /bin/true runs per policy, interleaved so that drift hits all three alike."""
    sys.path.insert(0, str(Path(__file__).parent))
    from warm import Warm, scratch

    opts = ("--no-memo", "-e", "ns", "-q", "--bridge", net.bridge, "--subnet", str(net.subnet))
    policies = ("host", "none", "bridge")
    samples: dict[str, list[tuple[float, float]]] = {p: [] for p in policies}
    try:
        with scratch("repeatr-bench-netrun-") as base:
            warm = Warm(base)
            paths = {p: warm.formula(p, ["/bin/true"], network=p) for p in policies}
            for path in paths.values():
                warm.run("run", str(path), *opts)  # warm the cache; the first bridge creates it
            for _ in range(runs):
                for policy, path in paths.items():
                    samples[policy].append(warm.run("run", str(path), *opts))
    finally:
        # The CLI keeps this network's IP index in the host's state dir (named
        # after the bridge, as `repeatr run --bridge` names it): no lease is
        # left in it, but the directory must go too.
        shutil.rmtree(DEFAULT_HOST.index_dir(net.bridge), ignore_errors=True)
    med = {
        p: (statistics.median(r for r, _ in v) * 1000, statistics.median(e for _, e in v) * 1000)
        for p, v in samples.items()
    }
    host_record, host_exit = med["host"]
    for policy, (record, exited) in med.items():
        line = f"warm run, network {policy:6}: record on stdout {record:6.1f} ms"
        line += f", exited {exited:6.1f} ms"
        if policy != "host":
            line += f"  = host + {record - host_record:5.1f} / + {exited - host_exit:5.1f} ms"
        print(line)
    added = med["bridge"][0] - host_record
    verdict = "meets" if added <= GOAL_MS else "MISSES"
    print(f"       bridge adds {added:.1f} ms to the critical path: {verdict} the "
          f"{GOAL_MS:g} ms goal")


def worker(args: argparse.Namespace) -> None:
    cls = PollingIndex if args.lock == "locks" else IPIndex
    idx = cls(Path(args.root), args.network, INDEX_SUBNET)
    bar = Path(args.barrier)
    (bar / f"ready.{args.id}").touch()
    while not (bar / "go").exists():
        time.sleep(0.0005)
    owner = Owner.current()
    waits = []
    for i in range(args.allocs):
        run_id = f"w{args.id}-{i}"
        start = time.perf_counter()
        idx.allocate(run_id, owner)
        waits.append(time.perf_counter() - start)
        idx.release(run_id)
    (bar / f"lat.{args.id}").write_text(json.dumps(waits))
    (bar / f"done.{args.id}").write_text(f"{time.monotonic()}\n")


def bench_index(root: Path, workers: int, allocs: int, lock: str) -> tuple[float, list[float]]:
    """Allocations per second and every allocate() latency, ``workers`` processes at a barrier."""
    network = f"idx_{lock}_{workers}"
    bar = root / f"barrier-{network}"
    bar.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--root", str(root), "--network", network,
             "--id", str(i), "--allocs", str(allocs), "--barrier", str(bar), "--lock", lock]
        )
        for i in range(workers)
    ]
    try:
        while len(list(bar.glob("ready.*"))) < workers:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("an index worker died before the barrier")
            time.sleep(0.005)
        start = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
        (bar / "go").touch()
        for p in procs:
            if p.wait() != 0:
                raise SystemExit("an index worker failed")
        # Until the last worker finished its loop (not its interpreter shutdown).
        end = max(float(f.read_text()) for f in bar.glob("done.*"))
        elapsed = end - start
        latencies = [x for f in bar.glob("lat.*") for x in json.loads(f.read_text())]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return workers * allocs / elapsed, latencies


@contextlib.contextmanager
def scratch_tmpfs() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="repeatr-bench-net-"))
    libc.mount("tmpfs", root, "tmpfs", 0, "size=64m,mode=0700")
    try:
        yield root
    finally:
        libc.umount2(root, libc.MNT_DETACH)
        root.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--allocs", type=int, default=500, help="per worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--id", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--lock", default="own", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: it creates network namespaces, veths and a bridge")

    net = Network(name="bench", subnet=free_subnet(), bridge=BRIDGE)
    with scratch_tmpfs() as root:
        host = NetHost(state_dir=root / "state", netns_prefix="rprbench-", veth_prefix="rpb")
        try:
            print(f"network {net.subnet} on bridge {net.bridge}; {args.runs} runs each")
            from repeatr.net.setup import prepare_sync, teardown_sync

            t, att = timed(
                lambda: prepare_sync("bridge", "bench-cold", "b", network=net, host=host)
            )
            teardown_sync(att)  # type: ignore[arg-type]
            print(f"bridge prepare, cold (creates the bridge): {t * 1000:.1f} ms")
            bench_runs(args.runs, net)
            for policy in ("none", "bridge"):
                prep, down = bench_policy(policy, args.runs, net, host)
                print(f"{policy:6} prepare  (before launch)   {ms(prep)}")
                print(f"{policy:6} teardown (after the record) {ms(down)}")
            for backend in ("asyncio", "trio"):
                prep = bench_async("bridge", args.runs, net, host, backend)
                print(f"bridge await prepare() on {backend:7}   {ms(prep)}")
            for lock in ("own", "locks"):
                label = "index lock" if lock == "own" else "locks.acquire"
                one, _ = bench_index(root, 1, args.allocs, lock)
                many, lat = bench_index(root, args.workers, args.allocs, lock)
                lat.sort()
                p999 = lat[int(len(lat) * 0.999)]
                print(
                    f"IP index ({label:13}): {one:6.0f} alloc+release/s with 1 process, "
                    f"{many:6.0f}/s with {args.workers}; allocate() under contention: "
                    f"median {statistics.median(lat) * 1000:.2f} ms, "
                    f"p99.9 {p999 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"
                )
        finally:
            from repeatr.net import gc

            report = gc.collect(host)
            subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)
            leftovers = [n for n in os.listdir("/sys/class/net") if n.startswith("rpb")]
            spaces = [n for n in os.listdir(host.netns_dir) if n.startswith("rprbench-")]
            if leftovers or spaces or report.failures:
                print(f"LEFTOVERS: links {leftovers}, netns {spaces}, {report.failures}")
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
