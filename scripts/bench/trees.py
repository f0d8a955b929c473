#!/usr/bin/env python3
"""Compare source trees of repeatr, run alternately on one warm state.

    git archive COMMIT | tar -x -C /tmp/before      # a tree to compare with
    .venv/bin/python scripts/bench/trees.py before=/tmp/before after=. [--runs 25] [--batches 3]

For each NAME=TREE (run as ``python -m repeatr`` with TREE as cwd, so its
``repeatr`` package is the one imported; each tree byte-compiled first),
prints the median of a warm single ``repeatr run`` of /bin/true (ns, input
cached, memo off: wall, and CPU of repeatr and its children) and of a
200-formula batch (``-j 4``: wall, runs/s, CPU of repeatr and its
children). The trees take turns, so load from elsewhere
hits them alike. Everything happens on a tmpfs the script mounts and unmounts.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time

from warm import PY, Warm, scratch


def _run(tree: str, state: str, *args: str) -> None:
    subprocess.run(
        [PY, "-m", "repeatr", *args, "--cache", state], cwd=tree, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="+", metavar="NAME=TREE")
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--formulas", type=int, default=200)
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    for tree in trees.values():
        subprocess.run([PY, "-m", "compileall", "-q", "repeatr"], cwd=tree, check=True,
                       stdout=subprocess.DEVNULL)

    with scratch("repeatr-bench-trees-", "2g") as base:
        warm = Warm(base)
        state = str(warm.state)
        true = str(warm.formula("true", ["/bin/true"]))
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(args.formulas)]
        for tree in trees.values():
            _run(tree, state, "run", true, "--no-memo", "-e", "ns")  # warm the cache
        single: dict[str, list[float]] = {k: [] for k in trees}
        single_cpu: dict[str, list[float]] = {k: [] for k in trees}
        wall: dict[str, list[float]] = {k: [] for k in trees}
        cpu: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                c0, t0 = _cpu(), time.perf_counter()
                _run(tree, state, "run", true, "--no-memo", "-e", "ns")
                single[name].append(time.perf_counter() - t0)
                single_cpu[name].append(_cpu() - c0)
        for _ in range(args.batches):
            for name, tree in trees.items():
                c0, t0 = _cpu(), time.perf_counter()
                _run(tree, state, "run", "-q", "--no-memo", "-e", "ns", "-j", "4", *paths)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(_cpu() - c0)
        print(f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; medians of {args.runs}"
              f" single runs, {args.batches} batches of {args.formulas}")
        for name in trees:
            line = (f"{name:12} single {statistics.median(single[name]) * 1000:6.1f} ms,"
                    f" CPU {statistics.median(single_cpu[name]) * 1000:6.1f} ms")
            if wall[name]:
                w = statistics.median(wall[name])
                line += (f" | batch {w:5.2f} s = {args.formulas / w:5.1f} runs/s,"
                         f" CPU {statistics.median(cpu[name]):5.1f} s")
            print(line)


if __name__ == "__main__":
    main()
