#!/usr/bin/env python3
"""Benchmark running a graph of steps locally (issue 15's goals), side by side.

    .venv/bin/python scripts/bench/module.py [--steps 200] [--chain 50] [--jobs 4] [--repeats 3]

As root, on a tmpfs it mounts (like ``run.py``), warm: the rootfs ware is in
the cache before anything is timed; ns executor. ``--through module``
(the default where ``repeatr module`` exists): ``repeatr module run -q``
of ``module.tl`` files generated into a workspace on the tmpfs, the rootfs
imported from its catalog; ``--through graph``: the library graph runner
(``repeatr.graph.local.run_graph``) in a fresh process that builds the
:class:`repeatr.graph.model.Graph` itself. Prints medians of ``--repeats``
rounds, the three graphs interleaved in every round so that load from
elsewhere falls on all alike:

- (a) ``--steps`` independent ``/bin/true`` steps (each its own formula,
  memo lookup off so each really runs); goal >= 100 steps/s on 2 cores;
- (b) a chain of ``--chain`` steps, each reading the previous one's output
  (a file it copies and appends to); goal <= 25 ms per step over the jobs'
  own time, which is measured alone: the same shell commands, one after
  the other, ``chroot``-ed into the rootfs, no namespaces;
- (c) a fully memoized re-run of (a)'s graph; goal <= 1 s;
- beside (a), the same formulas as files through one ``repeatr run -j JOBS
  F1 ... FN`` (a batch, issue 14): what the graph adds over the batch path.

For each: the wall time of the whole process (start, imports, loading the
module, the graph) and, through the graph runner, of the graph alone
(``run_graph``, measured inside), and CPU time (user + system,
``getrusage`` of the process and every descendant it reaped: the sandbox
server, the helpers and the jobs) per step. The machine may be loaded by
others: CPU per step is the figure that load does not inflate.
"""

from __future__ import annotations

import argparse
import importlib.util
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
    #: The graph alone (``run_graph``), as the process measured it; ``graph_own``:
    #: the CPU of the process itself (the rest: the sandbox server, helpers, jobs).
    graph_seconds: float
    graph_cpu: float
    graph_own: float


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


def workspace(base: Path, warm: Warm, kind: str, n: int) -> Path:
    """A workspace whose catalog holds the rootfs, and a module of the benchmark's graph."""
    ws = base / f"ws-{kind}"
    catalog = ws / ".timeless" / "catalog" / "bench.example" / "base"
    catalog.mkdir(parents=True)
    lineage = {
        "name": "bench.example/base",
        "releases": [
            {"name": "v1", "items": {"rootfs": warm.ware}, "metadata": None, "hazards": None}
        ],
    }
    (catalog / "lineage.tl").write_text(json.dumps(lineage, indent="\t"))
    mirrors = {"byModule": {"bench.example/base": {"tar": [f"ca+file://{warm.wh}/"]}}}
    (catalog / "mirrors.tl").write_text(json.dumps(mirrors, indent="\t"))
    steps: dict[str, Any] = {}
    for i in range(n):
        inputs = {"/": "base"}
        if kind == "fanout":
            op: dict[str, Any] = {"inputs": inputs, "action": {"exec": ["/bin/true", str(i)]}}
        else:
            if i:
                inputs["/in"] = f"s{i - 1:03d}.out"
            op = {
                "inputs": inputs,
                "action": {"exec": ["/bin/sh", "-c", chain_script(i)]},
                "outputs": {"out": "/task/out"},
            }
        steps[f"s{i:03d}"] = {"operation": op}
    module: dict[str, Any] = {
        "imports": {"base": "catalog:bench.example/base:v1:rootfs"},
        "steps": steps,
        "exports": {"last": f"s{n - 1:03d}.out"} if kind == "chain" else {},
    }
    (ws / "module.tl").write_text(json.dumps(module, indent="\t"))
    return ws


def child(args: argparse.Namespace) -> None:
    """One graph in this process; prints the graph's own wall and CPU seconds as JSON."""
    import anyio

    from repeatr.graph.local import run_graph
    from repeatr.graph.model import GraphEvents
    from repeatr.runner.batch import BatchOptions
    from repeatr.runner.run import RunOptions

    graph = graph_of(args.kind, args.n, args.ware, args.warehouse, args.steps_wh)
    options = RunOptions(state=Path(args.state), executor="ns", use_memo=args.memo)

    def cpu(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    async def main() -> None:
        own0, kids0 = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        outcome = await run_graph(graph, options, BatchOptions(jobs=args.jobs), GraphEvents())
        seconds = time.perf_counter() - t0
        own, kids = cpu(resource.RUSAGE_SELF) - own0, cpu(resource.RUSAGE_CHILDREN) - kids0
        if outcome.exit_status:
            raise SystemExit(f"the graph failed: {outcome.failed}")
        hits = sum(r.memo_hit for r in outcome.done.values())
        print(json.dumps({"seconds": seconds, "cpu": own + kids, "own": own, "hits": hits}))

    anyio.run(main)


def measured(
    argv: list[str], cwd: Path = REPO, *, parse: bool = True
) -> tuple[Usage, dict[str, Any]]:
    """Run ``argv`` to completion: its usage, and what it printed (JSON lines) if ``parse``.

    A child graph prints its own figures (one line); ``repeatr --format json``, events.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=cwd)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv[-12:])} failed")
    cpu = usage.ru_utime + usage.ru_stime
    lines = [json.loads(line) for line in out.splitlines()] if parse else []
    if len(lines) == 1 and "seconds" in lines[0]:  # a child graph's own figures
        inner = lines[0]
        return Usage(elapsed, cpu, inner["seconds"], inner["cpu"], inner["own"]), inner
    return Usage(elapsed, cpu, elapsed, cpu, 0.0), {"events": lines}


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
    has_modules = importlib.util.find_spec("repeatr.module") is not None
    ap.add_argument(
        "--through", choices=("module", "graph"), default="module" if has_modules else "graph",
        help="repeatr module run (default where it exists), or run_graph in-process",
    )
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
        files = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(args.steps)]
        batch = [*warm.argv("run", "-q", "--no-memo", "-e", "ns", "-j", str(args.jobs)), *files]

        spaces = {
            "fanout": workspace(base, warm, "fanout", args.steps),
            "chain": workspace(base, warm, "chain", args.chain),
        }

        def one(kind: str, n: int, *, memo: bool) -> tuple[Usage, dict[str, Any]]:
            if args.through == "module":
                # The re-run reports each step's state (JSON events), to count the hits.
                flags = ["--format", "json"] if memo else ["-q", "--no-memo"]
                run = warm.argv("module", "run", "-e", "ns", "-j", str(args.jobs), *flags)
                usage, events = measured(run, cwd=spaces[kind], parse=memo)
                hits = sum(e.get("state") == "memoized" for e in events.get("events", []))
                return usage, {"hits": hits}
            return measured([
                PY, __file__, "--child", kind, "--n", str(n), "--jobs", str(args.jobs),
                "--ware", warm.ware, "--warehouse", f"ca+file://{warm.wh}/",
                "--steps-wh", f"ca+file://{steps_wh}/", "--state", str(warm.state),
                *(["--memo"] if memo else []),
            ])

        print(
            f"machine: {os.cpu_count()} cpus, {os.uname().release}; load {loadavg()};"
            f" medians of {args.repeats} rounds; -j {args.jobs};"
            f" through {'repeatr module run' if args.through == 'module' else 'run_graph'}"
        )
        rounds: dict[str, list[Usage]] = {"fanout": [], "chain": [], "memo": [], "batch": []}
        alone: list[float] = []
        # (a)'s rounds run with --no-memo, which stores nothing: one untimed run
        # with the memo on stores what (c)'s re-runs are to find.
        one("fanout", args.steps, memo=True)
        for _ in range(args.repeats):
            rounds["fanout"].append(one("fanout", args.steps, memo=False)[0])
            rounds["batch"].append(measured(batch, parse=False)[0])
            usage, inner = one("fanout", args.steps, memo=True)
            if inner["hits"] != args.steps:
                raise SystemExit(f"the re-run was not fully memoized: {inner['hits']} hits")
            rounds["memo"].append(usage)
            rounds["chain"].append(one("chain", args.chain, memo=False)[0])
            alone.append(jobs_alone(warm.rootfs, args.chain))

    def med(key: str, field: str) -> float:
        return float(statistics.median(getattr(u, field) for u in rounds[key]))

    n, c = args.steps, args.chain
    own = float(statistics.median(alone))
    inside = args.through == "graph"
    # Through run_graph: the graph alone (the process's start-up beside it);
    # through repeatr module run: the whole process, as a user sees it.
    fan_rate = n / med("fanout", "graph_seconds")
    over = (med("chain", "graph_seconds") - own) / c * 1000
    memo_s = med("memo", "graph_seconds")

    def cpu(key: str, steps: int) -> str:
        text = f"CPU {med(key, 'graph_cpu') / steps * 1000:.1f} ms a step"
        if inside:
            text += (f", {med(key, 'graph_own') / steps * 1000:.1f} in the graph's process;"
                     f" whole process {med(key, 'seconds'):.2f} s,"
                     f" {med(key, 'cpu') / steps * 1000:.1f} ms CPU a step")
        return text

    rows = [
        (f"(a) {n} independent /bin/true steps", f"{fan_rate:7.1f} steps/s", cpu("fanout", n)),
        (f"    the same {n} as a repeatr run batch", f"{n / med('batch', 'seconds'):7.1f} steps/s",
         f"CPU {med('batch', 'cpu') / n * 1000:.1f} ms a step"),
        (f"(b) chain of {c} steps", f"{med('chain', 'graph_seconds'):7.2f} s",
         f"the jobs alone {own:.2f} s -> {over:.1f} ms a step over them; {cpu('chain', c)}"),
        ("(c) memoized re-run of (a)", f"{memo_s:7.2f} s", f"CPU {med('memo', 'graph_cpu'):.2f} s"
         + (f"; whole process {med('memo', 'seconds'):.2f} s" if inside else "")),
    ]
    for label, figure, rest in rows:
        print(f"{label:40} {figure}  ({rest})")
    print(f"load at the end: {loadavg()}")
    memo_all = med("memo", "seconds")
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
