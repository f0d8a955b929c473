#!/usr/bin/env python3
"""Benchmark whole runs, each against its bare baseline, in one run.

    .venv/bin/python scripts/bench/run.py [--runs 30] [--formulas 200]

Prints, with medians:
- a warm ``repeatr run`` of /bin/true (input cached, memo off) per executor
  vs bare ``unshare -mpfiun --fork --mount-proc chroot ROOT /bin/true`` on
  the same rootfs; goal: warm run <= bare + 50 ms;
- the floor under any such run: the leanest Python process that imports
  anyio and runs an empty ``anyio.run`` (the supervisor's event loop; no
  cyclic GC, no interpreter finalization, as ``repeatr`` itself), and what
  a warm run costs above it;
- a memo hit vs ``python -c pass``; goal: <= 3x;
- 200 distinct formulas through ``xargs -P4`` in runs/s; goal: >= 30.

What each network policy adds is ``net.py``'s. Everything happens on a
tmpfs the script mounts and unmounts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from warm import PY, REPO, Warm, scratch, sh, timed


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--executors", default="ns,chroot")
    args = ap.parse_args()

    with scratch("repeatr-bench-run-") as base:
        warm = Warm(base)
        true = warm.formula("true", ["/bin/true"])
        warm.run("run", str(true), "--no-memo")  # warm the cache
        print(f"machine: {os.cpu_count()} cpus, {os.uname().release}; medians of {args.runs}")
        unshare = ("unshare", "-mpfiun", "--fork", "--mount-proc", "chroot", str(warm.rootfs))
        bare = timed(lambda: sh(*unshare, "/bin/true"), args.runs)
        print(f"{'bare unshare -mpfiun chroot /bin/true':45} {bare:7.1f} ms")
        lean = "import gc, os; gc.disable(); import anyio; anyio.run(anyio.sleep, 0); os._exit(0)"
        floor = timed(lambda: sh(PY, "-c", lean), args.runs)
        print(f"{'floor: python, import anyio, empty anyio.run':45} {floor:7.1f} ms"
              f"  = bare + {floor - bare:5.1f} ms")
        for name in args.executors.split(","):
            warm_ms = timed(
                lambda n=name: warm.run("run", str(true), "--no-memo", "-e", n), args.runs  # type: ignore[misc]
            )
            verdict = "ok" if warm_ms <= bare + 50 else "MISS"
            print(
                f"{'warm repeatr run /bin/true -e ' + name:45} {warm_ms:7.1f} ms"
                f"  = bare + {warm_ms - bare:5.1f} ms (goal <= +50: {verdict});"
                f" floor + {warm_ms - floor:5.1f} ms"
            )

        warm.run("run", str(true))  # store the record
        memo = timed(lambda: warm.run("run", str(true)), args.runs)
        pypass = timed(lambda: sh(PY, "-c", "pass"), args.runs)
        verdict = "ok" if memo <= 3 * pypass else "MISS"
        print(f"{'python -c pass':45} {pypass:7.1f} ms")
        print(f"{'memo hit':45} {memo:7.1f} ms  = {memo / pypass:4.1f}x (goal <= 3x: {verdict})")

        paths = [
            warm.formula(f"f{i}", ["/bin/sh", "-c", f"echo {i}"]) for i in range(args.formulas)
        ]
        listing = "\n".join(str(p) for p in paths) + "\n"
        t0 = time.perf_counter()
        subprocess.run(
            ["xargs", "-P4", "-n1", *warm.argv("run", "-q")],
            input=listing.encode(), check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        )
        elapsed = time.perf_counter() - t0
        rate = args.formulas / elapsed
        verdict = "ok" if rate >= 30 else "MISS"
        print(
            f"{f'{args.formulas} distinct formulas, xargs -P4':45} {rate:7.1f} runs/s"
            f"  ({elapsed:.1f} s; goal >= 30: {verdict})"
        )


if __name__ == "__main__":
    main()
