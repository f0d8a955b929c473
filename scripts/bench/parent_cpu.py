#!/usr/bin/env python3
"""The batch process's own CPU a formula, source trees side by side.

    .venv/bin/python scripts/bench/parent_cpu.py [--rounds 3] [--formulas 200] NAME=TREE ...

As root, on a tmpfs it mounts (like ``run.py``). For each round, each TREE
(a checkout: ``git archive REV | tar -x -C DIR``, or ``.``) runs one
``repeatr run -q --no-memo -e ns F1 ... FN`` of N distinct ``/bin/true``
formulas on a warm cache, trees interleaved so a change in the host's load
falls on all of them. Prints per tree the median of the rounds: the batch
process's own CPU (user + system, from ``/proc/PID/stat`` until it exits,
its children's left out) divided by N, and runs/s. The figure includes the
process's start and imports, the same for every tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

from profile_batch import stat_times
from warm import PY, Warm, scratch


def batch_cpu(argv: list[str], tree: str) -> tuple[float, float]:
    """(own CPU seconds, wall seconds) of the batch ``argv`` run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=tree)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    last = (0.0, 0.0)
    while proc.poll() is None:
        last = stat_times(proc.pid) or last
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the batch from {tree} failed (exit {proc.returncode})")
    return last[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("trees", nargs="+", metavar="NAME=TREE")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    for tree in trees.values():
        # Byte-compiled first: with PYTHONDONTWRITEBYTECODE set (as in some shells here)
        # a git-archive tree would otherwise compile every module on every run.
        subprocess.run([PY, "-m", "compileall", "-q", "repeatr"], cwd=tree, check=True,
                       stdout=subprocess.DEVNULL)
    n: int = args.formulas
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    rate: dict[str, list[float]] = {name: [] for name in trees}
    with scratch("repeatr-bench-parent-") as base:
        warm = Warm(base)
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        argv = [PY, "-m", "repeatr", "run", "-q", "--no-memo", "-e", "ns", "--cache",
                str(warm.state)]
        for _ in range(args.rounds):
            for name, tree in trees.items():
                batch_cpu([*argv, paths[0]], os.path.abspath(tree))  # warm the cache
                own, wall = batch_cpu([*argv, *paths], os.path.abspath(tree))
                cpu[name].append(1000 * own / n)
                rate[name].append(n / wall)
    for name in trees:
        rounds = ", ".join(f"{c:.2f}" for c in cpu[name])
        print(
            f"{name}: {statistics.median(cpu[name]):.2f} ms of the batch process's CPU a"
            f" formula ({rounds}); {statistics.median(rate[name]):.1f} runs/s"
        )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
