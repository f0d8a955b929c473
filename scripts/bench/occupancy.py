#!/usr/bin/env python3
"""Whether a batch keeps its job places busy: source trees side by side.

    git archive COMMIT | tar -x -C /tmp/before      # a tree to compare with
    .venv/bin/python scripts/bench/occupancy.py [--rounds 3] [--jobs N] before=/tmp/before after=.

As root, on a tmpfs it mounts (like ``run.py``). Each round, each TREE runs
one ``repeatr run -q --no-memo -e ns [-j N] F1 ... F200`` of distinct
``/bin/true`` formulas on a warm cache (no ``--jobs``: the default, the
number of CPUs), trees interleaved so a change in the host's load falls on
all of them. Prints per tree the medians of: runs/s; the batch process's own
CPU a formula (``/proc/PID/stat`` until it exits); the CPU of it and every
descendant a formula (``getrusage``); and **the sandbox helpers alive**,
sampled every 2 ms from the sandbox server's children
(``/proc/PID/task/PID/children``): at ``-j N``, N means no job place ever
waits on the batch process, less means places idle while formulas sit in
steps that use little CPU. On a host loaded by others, runs/s swings; the
helpers alive and the CPU a formula are the steadier figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import time

from profile_batch import stat_times
from warm import PY, Warm, scratch


def _children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def one_batch(argv: list[str], tree: str) -> tuple[float, float, float, float]:
    """(runs/s, own CPU s, all CPU s, mean helpers alive) of one batch from ``tree``."""
    env = dict(os.environ, PYTHONPATH=tree)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
    own = (0.0, 0.0)
    server: int | None = None
    alive: list[int] = []
    while proc.poll() is None:
        own = stat_times(proc.pid) or own
        if server is None:
            found = [int(k) for k in _children(proc.pid) if _comm(k) == "repeatr-sandbox"]
            server = found[0] if found else None
        else:
            alive.append(len(_children(server)))
        time.sleep(0.002)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the batch from {tree} failed (exit {proc.returncode})")
    total = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    return 1 / wall, own[0], total, statistics.mean(alive) if alive else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--jobs", type=int, help="repeatr run -j (default: its own)")
    ap.add_argument("trees", nargs="+", metavar="NAME=TREE")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    n: int = args.formulas
    got: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in trees}
    with scratch("repeatr-bench-occupancy-", "2g") as base:
        warm = Warm(base)
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        argv = [PY, "-m", "repeatr", "run", "-q", "--no-memo", "-e", "ns", "--cache",
                str(warm.state), *(["-j", str(args.jobs)] if args.jobs else [])]
        for tree in trees.values():
            one_batch([*argv, paths[0]], os.path.abspath(tree))  # warm the cache
        for _ in range(args.rounds):
            for name, tree in trees.items():
                rate, own, total, alive = one_batch([*argv, *paths], os.path.abspath(tree))
                got[name].append((rate * n, own * 1000 / n, total * 1000 / n, alive))
    print(f"{os.cpu_count()} cpus; -j {args.jobs or 'default'}; medians of {args.rounds} rounds")
    for name, rows in got.items():
        rate, own, total, alive = (statistics.median(r[i] for r in rows) for i in range(4))
        each = ", ".join(f"{r[0]:.1f}" for r in rows)
        print(f"{name}: {rate:.1f} runs/s ({each}); CPU a formula: batch process {own:.2f} ms,"
              f" all {total:.2f} ms; helpers alive {alive:.2f}")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
