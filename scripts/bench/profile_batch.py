#!/usr/bin/env python3
"""Where a batch's time goes: one ``repeatr run F1 ... FN`` under py-spy, summarized.

    .venv/bin/python scripts/bench/profile_batch.py [--formulas 200] [--rate 250] [--out DIR]

As root, on a tmpfs it mounts (like ``run.py``). N distinct ``/bin/true``
formulas, ns executor, ``--no-memo``, warm cache. Prints:
- the CPU split between the batch process itself and its children (the
  sandbox helpers and the jobs), from ``/proc/PID/stat`` sampled until the
  batch exits (the children's share is of those it has reaped);
- from py-spy (``--subprocesses``, raw samples, idle threads left out),
  per kind of process (the batch, the sandbox helpers), the functions with
  the most samples inclusive and self.

py-spy samples Python frames only: an interpreter's start-up before its
first frame, and time in the kernel under a C call, show up as the frame
that made the call (or not at all). Needs ``py-spy`` (``pip install
py-spy`` into the venv); ``--out`` keeps the raw samples.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from warm import REPO, Warm, scratch

# "process 123:\"python ... \"" is the first frame of each stack with --subprocesses
PROCESS = re.compile(r'^process \d+:"(?P<cmd>.*)"$')
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>.+?)(?::\d+)?\)$")


def stat_times(pid: int) -> tuple[float, float] | None:
    """(own CPU s, reaped children's CPU s) of ``pid`` now, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / tick, (cutime + cstime) / tick


def kind(cmd: str) -> str:
    if "repeatr.executors" in cmd:
        return "sandbox helper"
    if "-m repeatr" in cmd or "repeatr run" in cmd:
        return "batch process"
    return "other"


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("/repeatr/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def summarize(raw: Path, top: int) -> None:
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        m = PROCESS.match(frames[0])
        who = kind(m["cmd"]) if m else "other"
        python = [short(f) for f in frames[1:] if not f.startswith("thread ")]
        totals[who] += count
        for name in set(python):
            inclusive[who][name] += count
        if python:
            own[who][python[-1]] += count
    for who, total in totals.most_common():
        print(f"\n{who}: {total} samples")
        print("  inclusive:")
        for name, count in inclusive[who].most_common(top):
            print(f"    {100 * count / total:5.1f} %  {name}")
        print("  self:")
        for name, count in own[who].most_common(top):
            print(f"    {100 * count / total:5.1f} %  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, help="keep the raw py-spy samples in this directory")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(REPO, ".venv/bin/py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    n: int = args.formulas

    with scratch("repeatr-bench-profile-") as base:
        warm = Warm(base)
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        warm.run("run", paths[0], "--no-memo", "-e", "ns")  # warm the cache
        batch = [*warm.argv("run", "-q", "--no-memo", "-e", "ns"), *paths]

        # The CPU split, without the profiler's own cost.
        t0 = time.perf_counter()
        proc = subprocess.Popen(batch, stdout=subprocess.DEVNULL, cwd=REPO)
        last = (0.0, 0.0)
        while proc.poll() is None:
            last = stat_times(proc.pid) or last
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the batch failed (exit {proc.returncode})")
        mine, children = last
        print(
            f"batch of {n}: {elapsed:.2f} s, {n / elapsed:.1f} runs/s; CPU a run:"
            f" {1000 * mine / n:.1f} ms in the batch process,"
            f" {1000 * children / n:.1f} ms in its children (helpers, jobs)"
        )

        raw = (args.out or base) / "batch.raw.txt"
        raw.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [spy, "record", "--subprocesses", "--nonblocking", "--format", "raw",
             "--rate", str(args.rate), "-o", str(raw), "--", *batch],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        summarize(raw, args.top)


if __name__ == "__main__":
    main()
