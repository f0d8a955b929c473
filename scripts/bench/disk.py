#!/usr/bin/env python3
"""What a job's disk costs per run: no ``limits.disk`` (the reserve watch) vs ``limits.disk``.

    sudo .venv/bin/python scripts/bench/disk.py [--runs 20] [EXECUTOR ...]

Medians of warm ``/bin/true`` runs through ``Executor.run()`` (one warm-up
first), in a busybox rootfs; the work dirs live on the root filesystem, where
a run's work dir lives (the image of ``limits.disk`` is a sparse file there).
For each size the helper makes an ext4 of that size (mkfs), attaches a loop
device and mounts it; the last column is the extra time over no limit.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(REPO))

from repeatr.executors import probe  # noqa: E402
from repeatr.executors.base import ExecutorName, load  # noqa: E402
from repeatr.model.limits import Limits  # noqa: E402

SIZES = (None, "1G", "10G", "64G", "256G")


async def one(name: str, area: Path, disk: str | None, runs: int) -> float:
    ex = load(name)()
    times = []
    for i in range(runs + 1):
        work = area / f"run-{disk}-{i}"
        work.mkdir()
        job = probe.true_job(area / "rootfs", work, ex)
        if disk is not None:
            job = dataclasses.replace(job, limits=Limits(disk=disk))
        try:
            t0 = time.perf_counter()
            result = await ex.run(job, on_output=probe._discard)
            elapsed = time.perf_counter() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)
        assert result.exit_code == 0, result
        if i:
            times.append(elapsed)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("executors", nargs="*", default=[ExecutorName.NS, ExecutorName.RUNC])
    args = parser.parse_args()
    area = Path(tempfile.mkdtemp(prefix="repeatr-bench-disk-", dir="/var/tmp"))
    try:
        probe.build_rootfs(area / "rootfs")
        print("| executor | " + " | ".join(f"disk {s or 'absent'} (ms)" for s in SIZES) + " |")
        print("|---" * (len(SIZES) + 1) + "|")
        for name in args.executors:
            row = [anyio.run(one, str(name), area, size, args.runs) for size in SIZES]
            base = row[0]
            cells = [f"{row[0]:.1f}"] + [f"{ms:.1f} (+{ms - base:.1f})" for ms in row[1:]]
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        shutil.rmtree(area, ignore_errors=True)


if __name__ == "__main__":
    main()
