#!/usr/bin/env python3
"""Where a batch's time goes: one ``repeatr run F1 ... FN`` under py-spy, summarized.

    .venv/bin/python scripts/bench/profile_batch.py [--formulas 200] [--rate 250] [--out DIR]

As root, on a tmpfs it mounts (like ``run.py``). N distinct ``/bin/true``
formulas, ns executor, ``--no-memo``, warm cache. Prints:
- the CPU split between the batch process itself and its children (the
  sandbox helpers and the jobs), from ``/proc/PID/stat`` sampled until the
  batch exits (the children's share is of those it has reaped), and how
  much of a helper's is the interpreter's start and the helper's imports
  (``python -I -S -c ...`` alone, median CPU of 20);
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
import statistics
import subprocess
import sys
import time
from pathlib import Path

from warm import REPO, Warm, scratch

# With --subprocesses each stack starts with a frame per process, outermost first:
# 'process 123:"python ...";' (a command line may hold ';', never '"').
PROCESS = re.compile(r'process \d+:"(?P<cmd>[^"]*)";?')
# Frames where a thread waits rather than works: py-spy's idle test misses these.
WAITING = ("select (selectors.py)", "wait (threading.py)", "_do_waitpid", "_wait (subprocess.py)")
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


def child_cpu_ms(argv: list[str], runs: int = 20) -> float:
    """The median CPU time (user + system, ms) of ``argv`` run to completion."""
    samples = []
    for _ in range(runs):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        samples.append((usage.ru_utime + usage.ru_stime) * 1000)
    return float(statistics.median(samples))


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
        procs = list(PROCESS.finditer(stack))
        who = kind(procs[-1]["cmd"]) if procs else "other"
        frames = stack[procs[-1].end():].split(";") if procs else stack.split(";")
        python = [short(f) for f in frames if f and not f.startswith("thread ")]
        totals[who] += count
        if python and any(w in python[-1] for w in WAITING):
            own[who]["(waiting: select, condition, waitpid)"] += count
            continue
        for name in set(python):
            if "(" in name and ("repeatr" in name or "_find_and_load" in name):
                inclusive[who][name] += count
        if python:
            own[who][python[-1]] += count
    for who, total in totals.most_common():
        print(f"\n{who}: {total} samples")
        print("  inclusive (repeatr's functions, and imports), waiting left out:")
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
    ap.add_argument("--summarize", type=Path, metavar="RAW", help="only summarize these samples")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize, args.top)
        return
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
        # What of a helper's CPU is only the interpreter and its imports.
        helper = [sys.executable, "-I", "-S", "-c"]
        bare = child_cpu_ms([*helper, "pass"])
        load = f"import sys; sys.path.append({str(REPO)!r}); import repeatr.executors.sandbox"
        imports = child_cpu_ms([*helper, load])
        print(
            f"a helper's start, CPU: python -I -S -c pass {bare:.1f} ms;"
            f" + importing repeatr.executors.sandbox {imports:.1f} ms;"
            f" the rest of a run's children {1000 * children / n - imports:.1f} ms"
            " (the helper's work: spec, mounts, unshare, the job, teardown)"
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
