#!/usr/bin/env python3
"""A/B of two (or more) source trees' batch rate and CPU a formula, rounds interleaved.

    .venv/bin/python scripts/bench/batch_ab.py [--rounds 6] [--formulas 200] NAME=TREE ...

As root, on a tmpfs it mounts (like ``run.py``). Each round runs, for each
TREE in turn (a checkout: ``git archive REV | tar -x -C DIR``, with the
compiled ``repeatr/linux/_*.so`` copied in, or ``.``), one
``repeatr run -q --no-memo -e ns F1 ... FN`` of N distinct ``/bin/true``
formulas on a warm cache (the order of the trees alternates from round to
round, so a change in the host's load falls on all of them). Prints per tree
the medians of the rounds: runs/s, the CPU a formula of everything the
batch ran (the batch process, the sandbox server, the helpers, the jobs:
``RUSAGE_CHILDREN``), and the batch process's peak RSS; and ``python -c
pass`` before and after, as the host's speed. Each tree is byte-compiled
first (this host may set ``PYTHONDONTWRITEBYTECODE``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from warm import PY, Warm, scratch, timed


def python_pass() -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return timed(lambda: subprocess.run([sys.executable, "-c", "pass"], env=env), 15)


def batch(argv: list[str], tree: str) -> tuple[float, float, float]:
    """(wall s, CPU s of it and its descendants, peak RSS MB) of ``argv`` run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=tree)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the batch from {tree} failed (exit {proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=0, help="-j (0: the default)")
    ap.add_argument("trees", nargs="+", metavar="NAME=TREE")
    args = ap.parse_args()
    trees = {name: os.path.abspath(t) for name, t in (s.split("=", 1) for s in args.trees)}
    for tree in trees.values():
        subprocess.run([PY, "-m", "compileall", "-q", f"{tree}/repeatr"], check=True)
    n: int = args.formulas
    rows: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    print(f"python -c pass: {python_pass():.1f} ms (before)")
    with scratch("repeatr-bench-ab-") as base:
        warm = Warm(base)
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        argv = [PY, "-m", "repeatr", "run", "-q", "--no-memo", "-e", "ns", "--cache",
                str(warm.state)]
        if args.jobs:
            argv += ["-j", str(args.jobs)]
        for tree in trees.values():
            batch([*argv, paths[0]], tree)  # warm the cache, and each tree once
        names = list(trees)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                wall, cpu, rss = batch([*argv, *paths], trees[name])
                rows[name].append((n / wall, 1000 * cpu / n, rss))
                print(f"  round {r}: {name:8} {n / wall:6.1f} runs/s {1000 * cpu / n:6.2f} ms"
                      f" {rss:5.1f} MB", flush=True)
    for name in trees:
        rate = statistics.median(r[0] for r in rows[name])
        cpu = statistics.median(r[1] for r in rows[name])
        rss = max(r[2] for r in rows[name])
        print(f"{name}: {rate:.1f} runs/s, {cpu:.2f} ms CPU a formula, peak RSS {rss:.1f} MB"
              f" (medians of {len(rows[name])})")
    print(f"python -c pass: {python_pass():.1f} ms (after);"
          f" load {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
