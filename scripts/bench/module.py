#!/usr/bin/env python3
"""Benchmark running a graph of steps locally (issue 15's goals), side by side.

    .venv/bin/python scripts/bench/module.py [--steps 200] [--chain 50] [--jobs 4] [--repeats 3]

As root, on a tmpfs it mounts (like ``run.py``), warm: the rootfs ware is in
the cache before anything is timed; ns executor. Driven through the library
graph runner (``repeatr.graph.local.run_graph``) in a fresh process per
graph, which builds a :class:`repeatr.graph.model.Graph` and runs it (no
``repeatr module run`` yet on this branch: module files would only add
their parsing). Prints medians of ``--repeats`` rounds, the three graphs
interleaved in every round so that load from elsewhere falls on all alike:

- (a) ``--steps`` independent ``/bin/true`` steps (each its own formula,
  memo lookup off so each really runs); goal >= 100 steps/s on 2 cores;
- (b) a chain of ``--chain`` steps, each reading the previous one's output
  (a file it copies and appends to); goal <= 25 ms per step over the jobs'
  own time, which is measured alone: the same shell commands, one after
  the other, ``chroot``-ed into the rootfs, no namespaces;
- (c) a fully memoized re-run of (a)'s graph; goal <= 1 s.

For each: the wall time of the whole process (start, imports, graph) and of
the graph alone (``run_graph``, measured inside), and CPU time (user +
system, ``getrusage`` of the process and every descendant it reaped: the
sandbox server, the helpers and the jobs) per step. The machine may be
loaded by others: CPU per step is the figure that load does not inflate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

from warm import PY, REPO, Warm, scratch


class Usage(NamedTuple):
    #: Whole process: wall seconds, CPU seconds (self + descendants).
    seconds: float
    cpu: float
    #: The graph alone (``run_graph``), as the process measured it.
    graph_seconds: float
    graph_cpu: float


def chain_script(i: int) -> str:
    """Step ``i`` of the chain: copy what the previous step left, add a line."""
    copy = "cat /in/log > /task/out/log; " if i else ""
    return f"mkdir -p /task/out; {copy}echo {i} >> /task/out/log"


def graph_of(kind: str, n: int, ware: str, warehouse: str, steps_wh: str) -> Any:
    """The benchmark's graph: ``fanout`` (n independent) or ``chain`` (n in a row)."""
    from repeatr.graph.model import Graph, Node, Output

    nodes: list[Node] = []
    for i in range(n):
        name = f"s{i:03d}"
        inputs: dict[str, Any] = {"/": ware}
        urls = {"/": (warehouse,)}
        if kind == "fanout":
            action: dict[str, Any] = {"exec": ["/bin/true", str(i)]}
            outputs: dict[str, Any] = {}
        else:
            action = {"exec": ["/bin/sh", "-c", chain_script(i)]}
            outputs = {"/task/out": {"packtype": "tar"}}
            if i:
                inputs["/in"] = Output(nodes[-1].name, "/task/out")
                urls["/in"] = (steps_wh,)
        nodes.append(
            Node(
                name=name, inputs=inputs, action=action, outputs=outputs, fetch_urls=urls,
                save_urls={p: steps_wh for p in outputs},
            )
        )
    return Graph(nodes={n.name: n for n in nodes}, order=tuple(n.name for n in nodes))


def child(args: argparse.Namespace) -> None:
    """One graph in this process; prints the graph's own wall and CPU seconds as JSON."""
    import anyio

    from repeatr.graph.local import run_graph
    from repeatr.graph.model import GraphEvents
    from repeatr.runner.batch import BatchOptions
    from repeatr.runner.run import RunOptions

    graph = graph_of(args.kind, args.n, args.ware, args.warehouse, args.steps_wh)
    options = RunOptions(state=Path(args.state), executor="ns", use_memo=args.memo)

    def cpu() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    async def main() -> None:
        cpu0, t0 = cpu(), time.perf_counter()
        outcome = await run_graph(graph, options, BatchOptions(jobs=args.jobs), GraphEvents())
        seconds, used = time.perf_counter() - t0, cpu() - cpu0
        if outcome.exit_status:
            raise SystemExit(f"the graph failed: {outcome.failed}")
        hits = sum(r.memo_hit for r in outcome.done.values())
        print(json.dumps({"seconds": seconds, "cpu": used, "hits": hits}))

    anyio.run(main)


def measured(argv: list[str]) -> tuple[Usage, dict[str, Any]]:
    """Run ``argv`` (a child graph) to completion: its usage and what it printed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[-12:])} failed")
    inner = json.loads(out)
    total = Usage(elapsed, usage.ru_utime + usage.ru_stime, inner["seconds"], inner["cpu"])
    return total, inner


def jobs_alone(rootfs: Path, n: int) -> float:
    """Seconds the chain's jobs take by themselves: each one ``chroot``-ed, one after the other."""
    (rootfs / "in").mkdir(exist_ok=True)
    (rootfs / "task" / "out").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", chain_script(i)], check=True)
        os.replace(rootfs / "task" / "out" / "log", rootfs / "in" / "log")
    seconds = time.perf_counter() - t0
    subprocess.run(["rm", "-rf", str(rootfs / "in"), str(rootfs / "task" / "out")], check=True)
    return seconds


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=200, help="independent steps (a, c)")
    ap.add_argument("--chain", type=int, default=50, help="steps in the chain (b)")
    ap.add_argument("--jobs", type=int, default=4, help="steps running at once")
    ap.add_argument("--repeats", type=int, default=3, help="rounds")
    ap.add_argument("--child", choices=("fanout", "chain"), help=argparse.SUPPRESS)
    for hidden in ("--n", "--ware", "--warehouse", "--steps-wh", "--state"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    ap.add_argument("--memo", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.kind, args.n = args.child, int(args.n)
        child(args)
        return

    with scratch("repeatr-bench-module-") as base:
        warm = Warm(base)
        steps_wh = base / "steps-wh"
        steps_wh.mkdir()
        warm.run("run", str(warm.formula("true", ["/bin/true"])), "--no-memo", "-e", "ns")

        def argv(kind: str, n: int, *, memo: bool) -> list[str]:
            return [
                PY, __file__, "--child", kind, "--n", str(n), "--jobs", str(args.jobs),
                "--ware", warm.ware, "--warehouse", f"ca+file://{warm.wh}/",
                "--steps-wh", f"ca+file://{steps_wh}/", "--state", str(warm.state),
                *(["--memo"] if memo else []),
            ]

        print(
            f"machine: {os.cpu_count()} cpus, {os.uname().release}; load {loadavg()};"
            f" medians of {args.repeats} rounds; -j {args.jobs}; through run_graph"
        )
        rounds: dict[str, list[Usage]] = {"fanout": [], "chain": [], "memo": []}
        alone: list[float] = []
        for _ in range(args.repeats):
            rounds["fanout"].append(measured(argv("fanout", args.steps, memo=False))[0])
            usage, inner = measured(argv("fanout", args.steps, memo=True))
            if inner["hits"] != args.steps:
                raise SystemExit(f"the re-run was not fully memoized: {inner['hits']} hits")
            rounds["memo"].append(usage)
            rounds["chain"].append(measured(argv("chain", args.chain, memo=False))[0])
            alone.append(jobs_alone(warm.rootfs, args.chain))

    def med(key: str, field: str) -> float:
        return float(statistics.median(getattr(u, field) for u in rounds[key]))

    n, c = args.steps, args.chain
    fan_rate = n / med("fanout", "graph_seconds")
    fan_rate_all = n / med("fanout", "seconds")
    own = float(statistics.median(alone))
    over = (med("chain", "graph_seconds") - own) / c * 1000
    over_all = (med("chain", "seconds") - own) / c * 1000
    memo_s, memo_all = med("memo", "graph_seconds"), med("memo", "seconds")
    rows = [
        (f"(a) {n} independent /bin/true steps", f"{fan_rate:7.1f} steps/s",
         f"whole process {fan_rate_all:.1f} steps/s;"
         f" CPU {med('fanout', 'graph_cpu') / n * 1000:.1f} ms a step"
         f" ({med('fanout', 'cpu') / n * 1000:.1f} with start-up)"),
        (f"(b) chain of {c} steps", f"{med('chain', 'graph_seconds'):7.2f} s",
         f"jobs alone {own:.2f} s -> {over:.1f} ms a step over them"
         f" ({over_all:.1f} with start-up);"
         f" CPU {med('chain', 'graph_cpu') / c * 1000:.1f} ms a step"),
        ("(c) memoized re-run of (a)", f"{memo_s:7.2f} s",
         f"whole process {memo_all:.2f} s; CPU {med('memo', 'cpu'):.2f} s"),
    ]
    for label, figure, rest in rows:
        print(f"{label:40} {figure}  ({rest})")
    print(f"load at the end: {loadavg()}")
    goals = [
        (f"(a) {n} independent steps >= 100 steps/s", f"{fan_rate:.1f} steps/s", fan_rate >= 100),
        ("(b) chain: <= 25 ms a step over the jobs", f"{over:.1f} ms", over <= 25),
        ("(c) memoized re-run <= 1 s (whole process)", f"{memo_all:.2f} s", memo_all <= 1),
    ]
    print("\ngoals:")
    for text, figure, ok in goals:
        print(f"  {text:50} {figure:>14}  {verdict(ok)}")


if __name__ == "__main__":
    main()
