#!/usr/bin/env python3
"""Benchmark a batch: N distinct formulas in one ``repeatr run`` vs N separate ones.

    .venv/bin/python scripts/bench/batch.py [--formulas 200] [--jobs 4]

Prints, for N distinct ``/bin/true`` formulas on the ns executor (input
cached, memo off so each one really runs): one ``repeatr run -j JOBS F1 ...
FN`` (runs/s, CPU time and peak RSS of the process), N separate ``repeatr
run`` one after the other, and N separate ones through ``xargs -PJOBS``.
Everything happens on a tmpfs the script mounts and unmounts.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import time

from warm import REPO, Warm, scratch


def _children() -> tuple[float, int]:
    """CPU seconds (user + system) and the largest peak RSS (kB) of reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=4)
    args = ap.parse_args()
    n = args.formulas

    with scratch("repeatr-bench-batch-") as base:
        warm = Warm(base)
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        warm.run("run", paths[0], "--no-memo", "-e", "ns")  # warm the cache
        print(f"machine: {os.cpu_count()} cpus, {os.uname().release}; {n} formulas")

        cpu0, _ = _children()
        t0 = time.perf_counter()
        subprocess.run(
            [*warm.argv("run", "-q", "--no-memo", "-e", "ns", "-j", str(args.jobs)), *paths],
            check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        )
        elapsed = time.perf_counter() - t0
        cpu1, rss = _children()
        print(
            f"{f'one batch, -j {args.jobs}':32} {n / elapsed:7.1f} runs/s  ({elapsed:.2f} s,"
            f" {cpu1 - cpu0:.1f} s CPU, peak RSS {rss / 1024:.0f} MB)"
        )

        t0 = time.perf_counter()
        for path in paths:
            subprocess.run(
                warm.argv("run", "-q", "--no-memo", "-e", "ns", path),
                check=True, stdout=subprocess.DEVNULL, cwd=REPO,
            )
        elapsed = time.perf_counter() - t0
        cpu2, _ = _children()
        print(
            f"{'separate runs, one at a time':32} {n / elapsed:7.1f} runs/s  ({elapsed:.2f} s,"
            f" {cpu2 - cpu1:.1f} s CPU)"
        )

        t0 = time.perf_counter()
        subprocess.run(
            ["xargs", f"-P{args.jobs}", "-n1", *warm.argv("run", "-q", "--no-memo", "-e", "ns")],
            input="\n".join(paths).encode(), check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        )
        elapsed = time.perf_counter() - t0
        cpu3, _ = _children()
        print(
            f"{f'separate runs, xargs -P{args.jobs}':32} {n / elapsed:7.1f} runs/s"
            f"  ({elapsed:.2f} s, {cpu3 - cpu2:.1f} s CPU)"
        )


if __name__ == "__main__":
    main()
