#!/usr/bin/env python3
"""A single warm ``repeatr run`` (the lean path), source trees side by side: wall and CPU.

    git archive COMMIT | tar -x -C /tmp/before      # a tree to compare with
    .venv/bin/python scripts/bench/lean_cpu.py before=/tmp/before after=. [--runs 20] [--xargs 0]

As root, on a tmpfs it mounts (like ``run.py``). Each TREE is byte-compiled
first (with ``PYTHONDONTWRITEBYTECODE`` set, nothing else would write its
``.pyc`` files and every run would compile every module) and gets this
checkout's compiled modules (``_jobstart``, ``_libc``) if it has none (``git archive``
leaves them out). Then, in rounds, each tree runs ``python -m repeatr run
--no-memo -e ns F`` of ``/bin/true`` on a warm cache, then ``python -c
pass`` and the anyio floor of ``run.py`` run once, all interleaved so that
load from elsewhere falls on all of them alike. Prints per tree the median
wall time and CPU (user + system of the process and every descendant it
reaped: the sandbox server and helper too), and the medians of the two
references as the host's speed. With ``--xargs N``, also N formulas through
``xargs -P4 repeatr run`` per tree and round: runs/s and CPU a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import run
from warm import PY, REPO, Warm, scratch

LEAN = "import gc, os; gc.disable(); import anyio; anyio.run(anyio.sleep, 0); os._exit(0)"


def measured(argv: list[str], cwd: str, data: bytes = b"") -> tuple[float, float]:
    """(wall seconds, CPU seconds of it and its reaped descendants) of ``argv``, run
    without ``PYTHONDONTWRITEBYTECODE`` (the trees are byte-compiled)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    usage = run.measured(argv, data, env=env, cwd=cwd)
    return usage.seconds, usage.cpu


def prepare(tree: str) -> None:
    subprocess.run([PY, "-m", "compileall", "-q", "repeatr"], cwd=tree, check=True,
                   stdout=subprocess.DEVNULL)
    here = REPO / "repeatr" / "linux"
    for so in here.glob("_*.so"):
        there = Path(tree) / "repeatr" / "linux" / so.name
        if not there.exists():
            shutil.copy2(so, there)


def ms(values: list[float]) -> float:
    return float(statistics.median(values)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trees", nargs="+", metavar="NAME=TREE")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--xargs", type=int, default=0, metavar="N")
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.trees)
    for tree in trees.values():
        prepare(tree)
    with scratch("repeatr-bench-lean-") as base:
        warm = Warm(base)
        true = str(warm.formula("true", ["/bin/true"]))
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(args.xargs)]
        single = [PY, "-m", "repeatr", "run", "--no-memo", "-e", "ns", "--cache",
                  str(warm.state), true]
        for tree in trees.values():
            measured(single, tree)  # warm the cache, and the page cache
        walls: dict[str, list[float]] = {k: [] for k in (*trees, "pass", "floor")}
        cpus: dict[str, list[float]] = {k: [] for k in (*trees, "pass", "floor")}
        for _ in range(args.runs):
            for name, tree in trees.items():
                wall, cpu = measured(single, tree)
                walls[name].append(wall)
                cpus[name].append(cpu)
            for name, code in (("pass", "pass"), ("floor", LEAN)):
                wall, cpu = measured([PY, "-c", code], "/")
                walls[name].append(wall)
                cpus[name].append(cpu)
        print(f"medians of {args.runs} interleaved runs (python {sys.version.split()[0]})")
        for name in walls:
            print(f"  {name:10} {ms(walls[name]):6.1f} ms wall {ms(cpus[name]):6.1f} ms CPU")
        if args.xargs:
            listing = ("\n".join(paths) + "\n").encode()
            xargs = ["xargs", "-P4", "-n1", PY, "-m", "repeatr", "run", "-q", "--no-memo",
                     "-e", "ns", "--cache", str(warm.state)]
            rates: dict[str, list[float]] = {k: [] for k in trees}
            xcpu: dict[str, list[float]] = {k: [] for k in trees}
            for _ in range(3):
                for name, tree in trees.items():
                    wall, cpu = measured(xargs, tree, listing)
                    rates[name].append(args.xargs / wall)
                    xcpu[name].append(cpu / args.xargs)
            print(f"xargs -P4 repeatr run, {args.xargs} formulas, medians of 3 rounds")
            for name in trees:
                print(f"  {name:10} {statistics.median(rates[name]):6.1f} runs/s"
                      f" {ms(xcpu[name]):6.1f} ms CPU a run")


if __name__ == "__main__":
    main()
