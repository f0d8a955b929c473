#!/usr/bin/env python3
"""Benchmark whole runs against their peers, side by side, in one run.

    .venv/bin/python scripts/bench/run.py [--runs 15] [--formulas 200] [--repeats 3]

As root (it mounts a tmpfs, and podman needs root). Everything happens on
that tmpfs, warm: the rootfs ware is in repeatr's cache and imported into
podman before anything is timed, every repeatr run is on the ns executor
with ``--no-memo`` (so each formula really runs), every podman run is
``podman run --rm --network=none`` with runc (``podman_peer.py`` says how
podman is configured without touching the host's configuration).

Prints medians of:
- (a) one ``repeatr run F1 ... F200`` of 200 distinct ``/bin/true``
  formulas, in runs/s, and the same 200 jobs through ``xargs -P4 podman run
  --rm`` of the same rootfs; goals (issue 14): >= 100 runs/s, >= 5x podman;
- (b) a single warm ``repeatr run`` of ``/bin/true`` against ``podman run
  --rm`` and against the floor under any run (the leanest Python process
  that imports anyio and runs an empty ``anyio.run``: no cyclic GC, no
  interpreter finalization, as ``repeatr`` itself), interleaved; goals:
  <= 0.65x podman, <= floor + 30 ms;
- (c) the same 200 formulas through ``xargs -P4 repeatr run`` (a process
  each); goal: >= 20 runs/s (the run issue asked 30);
- (d) the peak RSS of the 200-formula batch: the largest resident set of the
  batch process or any of its descendants (``wait4``'s ``ru_maxrss``, what
  ``/usr/bin/time -v`` shows); goal: <= 80 MB;
and, as context, bare ``unshare -mpfiun chroot`` (the run issue's goal: a
warm run <= bare + 50 ms) and a memo hit against ``python -c pass`` (goal
<= 3x). It ends with every goal next to its figure, met or not met.

The batch-level figures (a, c, d) are each the median of ``--repeats``
rounds, the three interleaved in every round so that load from elsewhere
falls on all of them alike. What each network policy adds is ``net.py``'s;
the other executors are ``run_executors.py``'s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from podman_peer import Podman, available
from warm import PY, REPO, Warm, scratch

LEAN = "import gc, os; gc.disable(); import anyio; anyio.run(anyio.sleep, 0); os._exit(0)"


class Usage(NamedTuple):
    seconds: float
    cpu: float  # user + system seconds of the process and every descendant it reaped
    max_rss_kb: int  # the largest resident set among them


def measured(
    argv: list[str], data: bytes = b"", env: dict[str, str] | None = None, cwd: str | Path = REPO
) -> Usage:
    """Run ``argv`` in ``cwd`` to completion (``data`` on stdin, stdout discarded): wall
    time and rusage.

    Its stderr is kept aside (podman warns on every run here) and shown if it fails.
    """
    with tempfile.TemporaryFile() as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
            cwd=cwd, env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.close()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(argv[:8])} ... failed (exit {proc.returncode}):\n{tail}")
    return Usage(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def median_ms(seconds: list[float]) -> float:
    return float(statistics.median(seconds)) * 1000


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=15, help="single runs of each kind (b)")
    ap.add_argument("--formulas", type=int, default=200, help="formulas in a batch (a, c, d)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the batch figures")
    ap.add_argument("--jobs", type=int, help="repeatr run -j for the batch (default: its own)")
    args = ap.parse_args()
    if why := available():
        raise SystemExit(why)
    n: int = args.formulas

    with scratch("repeatr-bench-run-") as base:
        warm = Warm(base)
        true = warm.formula("true", ["/bin/true"])
        paths = [str(warm.formula(f"t{i}", ["/bin/true", str(i)])) for i in range(n)]
        warm.run("run", str(true), "--no-memo", "-e", "ns")  # warm the cache
        podman = Podman(base / "podman")
        try:
            podman.load(warm.rootfs)
            podman.run("/bin/true")  # the first run of an image sets up its storage
            print(
                f"machine: {os.cpu_count()} cpus, {os.uname().release}; load {loadavg()};"
                f" medians of {args.runs} single runs and of {args.repeats} rounds of {n}"
            )
            singles: dict[str, list[Usage]] = {"repeatr": [], "full": [], "podman": [], "floor": []}
            single = warm.argv("run", str(true), "--no-memo", "-e", "ns")
            # The same run on the full path (anyio, argparse): REPEATR_SINGLE=0.
            full_env = dict(os.environ, REPEATR_SINGLE="0")
            for _ in range(args.runs):
                singles["repeatr"].append(measured(single))
                singles["full"].append(measured(single, env=full_env))
                singles["podman"].append(measured(podman.argv("/bin/true"), env=podman.env))
                singles["floor"].append(measured([PY, "-c", LEAN]))
            one, full, pod, floor = (
                median_ms([u.seconds for u in singles[k]])
                for k in ("repeatr", "full", "podman", "floor")
            )
            cpu = {k: median_ms([u.cpu for u in singles[k]]) for k in ("repeatr", "full")}
            print(f"{'(b) warm repeatr run /bin/true -e ns':50} {one:7.1f} ms"
                  f"  ({cpu['repeatr']:.0f} ms CPU, lean path: no event loop)")
            print(f"{'(b) the same on the full path (REPEATR_SINGLE=0)':50} {full:7.1f} ms"
                  f"  ({cpu['full']:.0f} ms CPU)")
            print(f"{'(b) podman run --rm (runc) /bin/true':50} {pod:7.1f} ms"
                  f"  -> ratio {one / pod:.2f}x")
            print(f"{'(b) floor: python, import anyio, empty anyio.run':50} {floor:7.1f} ms"
                  f"  -> repeatr = floor + {one - floor:.1f} ms")

            jobs = ["-j", str(args.jobs)] if args.jobs else []
            batch_argv = [*warm.argv("run", "-q", "--no-memo", "-e", "ns", *jobs), *paths]
            listing = ("\n".join(paths) + "\n").encode()
            xargs_repeatr = [
                "xargs", "-P4", "-n1", *warm.argv("run", "-q", "--no-memo", "-e", "ns")
            ]
            numbers = "".join(f"{i}\n" for i in range(n)).encode()
            xargs_podman = ["xargs", "-P4", "-I{}", *podman.argv("/bin/true", "{}")]
            rounds: dict[str, list[Usage]] = {"batch": [], "podman": [], "xargs": []}
            for _ in range(args.repeats):
                rounds["batch"].append(measured(batch_argv))
                rounds["podman"].append(measured(xargs_podman, numbers, env=podman.env))
                rounds["xargs"].append(measured(xargs_repeatr, listing))
        finally:
            podman.close()

        def rate(key: str) -> float:
            return float(statistics.median(n / u.seconds for u in rounds[key]))

        def cpu_ms(key: str) -> float:
            return float(statistics.median(u.cpu for u in rounds[key])) / n * 1000

        batch, pods, xargs = rate("batch"), rate("podman"), rate("xargs")
        rss = max(u.max_rss_kb for u in rounds["batch"]) / 1024
        j = f"-j {args.jobs}" if args.jobs else "default -j"
        print(f"{f'(a) {n} formulas, one repeatr run ({j})':50} {batch:7.1f} runs/s"
              f"  ({cpu_ms('batch'):.0f} ms CPU a run)")
        print(f"{f'(a) {n} jobs, xargs -P4 podman run --rm':50} {pods:7.1f} runs/s"
              f"  -> ratio {batch / pods:.1f}x  (podman's CPU not counted: conmon detaches)")
        print(f"{f'(c) {n} formulas, xargs -P4 repeatr run':50} {xargs:7.1f} runs/s"
              f"  ({cpu_ms('xargs'):.0f} ms CPU a run)")
        print(f"{'(d) peak RSS of the batch (largest process)':50} {rss:7.1f} MB")

        unshare = ["unshare", "-mpfiun", "--fork", "--mount-proc", "chroot", str(warm.rootfs)]
        bare = median_ms([measured([*unshare, "/bin/true"]).seconds for _ in range(args.runs)])
        warm.run("run", str(true), "-e", "ns")  # store the record
        memo = median_ms([warm.run("run", str(true), "-e", "ns")[1] for _ in range(args.runs)])
        pypass = median_ms([measured([PY, "-c", "pass"]).seconds for _ in range(args.runs)])
        print(f"{'bare unshare -mpfiun --fork chroot /bin/true':50} {bare:7.1f} ms"
              f"  -> repeatr = bare + {one - bare:.1f} ms")
        print(f"{'python -c pass':50} {pypass:7.1f} ms")
        print(f"{'memo hit':50} {memo:7.1f} ms  -> {memo / pypass:.1f}x python -c pass")
        print(f"load at the end: {loadavg()}")

        goals = [
            (f"(a) batch of {n}, one invocation >= 100 runs/s",
             f"{batch:.1f} runs/s", batch >= 100),
            ("(a) batch >= 5x xargs -P4 podman run --rm",
             f"{batch / pods:.1f}x", batch >= 5 * pods),
            ("(b) single warm run <= 0.65x podman run --rm",
             f"{one / pod:.2f}x", one <= 0.65 * pod),
            ("(b) single warm run <= anyio floor + 30 ms",
             f"floor + {one - floor:.1f} ms", one <= floor + 30),
            ("(c) xargs -P4 repeatr run >= 20 runs/s",
             f"{xargs:.1f} runs/s", xargs >= 20),
            (f"(d) peak RSS of the batch of {n} <= 80 MB",
             f"{rss:.1f} MB", rss <= 80),
            ("run issue: single warm run <= bare + 50 ms",
             f"bare + {one - bare:.1f} ms", one <= bare + 50),
            ("run issue: memo hit <= 3x python -c pass",
             f"{memo / pypass:.1f}x", memo <= 3 * pypass),
        ]
        print("\ngoals:")
        for text, figure, ok in goals:
            print(f"  {text:50} {figure:>18}  {verdict(ok)}")


if __name__ == "__main__":
    main()
