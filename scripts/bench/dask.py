#!/usr/bin/env python3
"""Benchmark Dask's overhead per step (issue 16's goal: <= 15 ms a step).

    .venv/bin/python scripts/bench/dask.py [--steps 200] [--repeats 3] [--threads 2]

As root, on a tmpfs it mounts: a busybox rootfs packed into a ``ca+file``
warehouse there (shared storage: every process is on this host), a Dask
scheduler and two workers (``dask worker … --preload repeatr.distributed``,
each ``--threads`` threads and its own state dir, both warmed up with the
rootfs unpacked before anything is timed), ns executor, memo off so every
step really runs. Each round runs, alternately so that load from elsewhere
falls on both alike (the scheduler's ``worker-saturation`` is ``inf`` unless
``--worker-saturation default``: with Dask's 1.1, a worker gets its next
task only after reporting the last one done, a round trip per step):

- the graph of ``--steps`` independent ``/bin/true`` steps on Dask
  (:func:`repeatr.distributed.client.run_graph_dask`, in this process);
- the same graph locally (``repeatr.graph.local.run_graph``, in a fresh
  process through ``scripts/bench/module.py``'s child), with as many steps
  at once as the workers have threads in all.

It prints medians of the wall time of each graph, and the CPU time (user +
system) each cost: locally, the process and all it reaped; on Dask, this
process (the client) plus every process of the scheduler's and workers'
sessions (their own, and what they reaped: sandbox helpers and jobs). The
machine may be loaded by others: CPU per step is the figure load does not
inflate. Overhead per step is (Dask - local) / steps, for both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from warm import PY, REPO, Warm, scratch

# This file is named dask.py: its directory must not hide the dask package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path.insert(0, str(REPO))

from tests.distributed.cluster import Cluster, session_pids  # noqa: E402

CLOCK = os.sysconf("SC_CLK_TCK")


def graph_of(n: int, ware: str, warehouse: str, tag: str) -> Any:
    from repeatr.graph.model import Graph, Node

    nodes = [
        Node(name=f"s{i:03d}", inputs={"/": ware}, action={"exec": ["/bin/true", tag, str(i)]},
             outputs={}, fetch_urls={"/": (warehouse,)})
        for i in range(n)
    ]
    return Graph({x.name: x for x in nodes}, tuple(x.name for x in nodes))


def session_cpu(sids: list[int]) -> float:
    """CPU seconds of every process in these sessions, with what each reaped."""
    total = 0
    for sid in sids:
        for pid in session_pids(sid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def on_dask(cluster: Cluster, graph: Any, state: Path, warehouse: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``graph`` on the cluster."""
    import anyio

    from repeatr.distributed.client import DaskRun
    from repeatr.graph.model import GraphEvents
    from repeatr.runner.batch import BatchOptions
    from repeatr.runner.run import RunOptions

    options = RunOptions(state=state, executor="ns", use_memo=False)
    sids = [p.pid for p in cluster.processes.values()]

    run = DaskRun(graph, options, BatchOptions(jobs=1), GraphEvents(), warehouse=warehouse)
    cpu0, cluster0, t0 = own_cpu(), session_cpu(sids), time.perf_counter()
    anyio.run(run.run, cluster.address, backend="asyncio")
    seconds = time.perf_counter() - t0
    outcome = run.outcome()
    if run.events_waited > 0.1:
        print(f"  (answers waited {run.events_waited:.2f} s in all for their events)")
    cpu = own_cpu() - cpu0 + session_cpu(sids) - cluster0
    if outcome.exit_status:
        raise SystemExit(f"the graph failed on Dask: {dict(outcome.failed)}")
    return seconds, cpu


def locally(n: int, jobs: int, warm: Warm, steps_wh: Path) -> tuple[float, float]:
    """Wall and CPU seconds of the same graph run by ``run_graph`` in a fresh process."""
    argv = [
        PY, str(REPO / "scripts" / "bench" / "module.py"), "--child", "fanout", "--n", str(n),
        "--jobs", str(jobs), "--ware", warm.ware, "--warehouse", f"ca+file://{warm.wh}/",
        "--steps-wh", f"ca+file://{steps_wh}/", "--state", str(warm.state),
    ]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=REPO).stdout
    inner = json.loads(out)
    return float(inner["seconds"]), float(inner["cpu"])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200, help="independent steps")
    ap.add_argument("--repeats", type=int, default=3, help="rounds")
    ap.add_argument("--threads", type=int, default=2, help="threads of each of the 2 workers")
    ap.add_argument(
        "--worker-saturation", default="inf", metavar="X",
        help="the scheduler's distributed.scheduler.worker-saturation (default inf, as"
        " docs/distributed.md advises; 'default': Dask's own, 1.1)",
    )
    args = ap.parse_args()
    n = args.steps

    with scratch("repeatr-bench-dask-") as base:
        warm = Warm(base)
        steps_wh = base / "steps-wh"
        steps_wh.mkdir()
        warehouse = f"ca+file://{warm.wh}/"
        warm.run("run", str(warm.formula("true", ["/bin/true"])), "--no-memo", "-e", "ns")
        cluster = Cluster(base / "cluster")
        cluster.base.mkdir()
        try:
            saturation = None if args.worker_saturation == "default" else args.worker_saturation
            cluster.start_scheduler(worker_saturation=saturation)
            for name in ("w1", "w2"):
                cluster.start_worker(name, nthreads=args.threads, executors="ns")
            cluster.wait_for_workers(["w1", "w2"])
            # Warm-up: both workers unpack the rootfs and start their sandbox servers.
            on_dask(cluster, graph_of(4 * args.threads, warm.ware, warehouse, "warm-up"),
                    base / "client", warehouse)
            print(
                f"machine: {os.cpu_count()} cpus, {os.uname().release}; load"
                f" {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; medians of"
                f" {args.repeats} rounds; 2 workers x {args.threads} threads; local -j"
                f" {2 * args.threads}; worker-saturation {args.worker_saturation}"
            )
            dask: list[tuple[float, float]] = []
            local: list[tuple[float, float]] = []
            for r in range(args.repeats):
                graph = graph_of(n, warm.ware, warehouse, f"round-{r}")
                dask.append(on_dask(cluster, graph, base / "client", warehouse))
                local.append(locally(n, 2 * args.threads, warm, steps_wh))
        finally:
            cluster.stop()

    def med(runs: list[tuple[float, float]], i: int) -> float:
        return float(statistics.median(run[i] for run in runs))

    d_wall, d_cpu, l_wall, l_cpu = med(dask, 0), med(dask, 1), med(local, 0), med(local, 1)
    over_wall = (d_wall - l_wall) / n * 1000
    over_cpu = (d_cpu - l_cpu) / n * 1000
    print(f"{'':28} {'wall':>9} {'steps/s':>8} {'CPU':>9} {'CPU/step':>9}")
    rows = (("Dask, 2 workers", d_wall, d_cpu), ("local run_graph", l_wall, l_cpu))
    for label, wall, cpu in rows:
        print(f"{label:28} {wall:8.2f}s {n / wall:8.1f} {cpu:8.2f}s {cpu / n * 1000:7.1f}ms")
    print(f"Dask's overhead per step: {over_wall:.1f} ms wall, {over_cpu:.1f} ms CPU"
          f"  (goal <= 15 ms: {'met' if over_wall <= 15 else 'NOT MET'})")


if __name__ == "__main__":
    main()
