#!/usr/bin/env python3
"""Benchmark whole runs, each against its bare baseline, in one run.

    .venv/bin/python scripts/bench/run.py [--runs 30] [--formulas 200]

Prints, with medians:
- a warm ``repeatr run`` of /bin/true (input cached, memo off) per executor
  vs bare ``unshare -mpfiun --fork --mount-proc chroot ROOT /bin/true`` on
  the same rootfs; goal: warm run <= bare + 50 ms;
- a memo hit vs ``python -c pass``; goal: <= 3x;
- a warm run with network ``host``, ``none`` and ``bridge`` (ns executor):
  what each adds over ``host``; goal: bridge <= host + 10 ms;
- 200 distinct formulas through ``xargs -P4`` in runs/s; goal: >= 30.

Everything happens on a tmpfs the script mounts and unmounts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def sh(*argv: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload, no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--formulas", type=int, default=200)
    ap.add_argument("--executors", default="ns,chroot")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="repeatr-bench-run-"))
    sh("mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", str(base))
    try:
        rootfs = base / "rootfs"
        sh(PY, str(REPO / "scripts" / "mkrootfs"), str(rootfs))
        wh = base / "wh"
        wh.mkdir()
        state = base / "state"
        ware = subprocess.run(
            [PY, "-m", "repeatr", "pack", str(rootfs), "--target", f"ca+file://{wh}/",
             "--filter", "uid=keep,gid=keep,mtime=keep", "-q"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()

        def formula(name: str, argv: list[str]) -> Path:
            doc = {
                "formula": {"inputs": {"/": ware}, "action": {"exec": argv}},
                "context": {"fetchUrls": {"/": [f"ca+file://{wh}/"]}},
            }
            path = base / f"{name}.json"
            path.write_text(json.dumps(doc))
            return path

        true = formula("true", ["/bin/true"])

        def repeatr(*a: str) -> None:
            sh(PY, "-m", "repeatr", *a, "--cache", str(state), stderr=subprocess.DEVNULL)

        repeatr("run", str(true), "--no-memo")  # warm the cache
        print(f"machine: {os.cpu_count()} cpus, {os.uname().release}; medians of {args.runs}")
        unshare = ("unshare", "-mpfiun", "--fork", "--mount-proc", "chroot", str(rootfs))
        bare = timed(lambda: sh(*unshare, "/bin/true"), args.runs)
        print(f"{'bare unshare -mpfiun chroot /bin/true':45} {bare:7.1f} ms")
        for name in args.executors.split(","):
            warm = timed(lambda n=name: repeatr("run", str(true), "--no-memo", "-e", n), args.runs)  # type: ignore[misc]
            verdict = "ok" if warm <= bare + 50 else "MISS"
            print(
                f"{'warm repeatr run /bin/true -e ' + name:45} {warm:7.1f} ms"
                f"  = bare + {warm - bare:5.1f} ms (goal <= +50: {verdict})"
            )

        # Networks: what none and bridge add over host, on a bench-only bridge.
        net = ("--bridge", "rprbenchrun0", "--subnet", "10.213.251.0/24")
        by_policy = {}
        for policy in ("host", "none", "bridge"):
            doc = json.loads(true.read_text())
            doc["formula"]["action"]["network"] = policy
            path = base / f"net-{policy}.json"
            path.write_text(json.dumps(doc))
            repeatr("run", str(path), "--no-memo", "-e", "ns", *net)  # first use creates the bridge
            by_policy[policy] = timed(
                lambda p=path: repeatr("run", str(p), "--no-memo", "-e", "ns", *net),  # type: ignore[misc]
                args.runs,
            )
        subprocess.run(["ip", "link", "del", "rprbenchrun0"], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", "/run/repeatr/net/rprbenchrun0"], check=False)
        host_ms = by_policy["host"]
        for policy, ms in by_policy.items():
            extra = "" if policy == "host" else f"  = host + {ms - host_ms:5.1f} ms"
            goal = "  (goal: bridge <= host + 10 ms)" if policy == "bridge" else ""
            print(f"{'warm run, ns, network ' + policy:45} {ms:7.1f} ms{extra}{goal}")

        repeatr("run", str(true))  # store the record
        memo = timed(lambda: repeatr("run", str(true)), args.runs)
        pypass = timed(lambda: sh(PY, "-c", "pass"), args.runs)
        verdict = "ok" if memo <= 3 * pypass else "MISS"
        print(f"{'python -c pass':45} {pypass:7.1f} ms")
        print(f"{'memo hit':45} {memo:7.1f} ms  = {memo / pypass:4.1f}x (goal <= 3x: {verdict})")

        paths = [formula(f"f{i}", ["/bin/sh", "-c", f"echo {i}"]) for i in range(args.formulas)]
        listing = "\n".join(str(p) for p in paths) + "\n"
        t0 = time.perf_counter()
        subprocess.run(
            ["xargs", "-P4", "-n1", PY, "-m", "repeatr", "run", "--cache", str(state), "-q"],
            input=listing.encode(), check=True, stdout=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - t0
        rate = args.formulas / elapsed
        verdict = "ok" if rate >= 30 else "MISS"
        print(
            f"{f'{args.formulas} distinct formulas, xargs -P4':45} {rate:7.1f} runs/s"
            f"  ({elapsed:.1f} s; goal >= 30: {verdict})"
        )
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        base.rmdir()


if __name__ == "__main__":
    main()
