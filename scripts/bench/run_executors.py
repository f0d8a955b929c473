#!/usr/bin/env python3
"""Executor overhead: /bin/true through the executor interface vs the bare runtime.

    sudo .venv/bin/python scripts/bench/run_executors.py [--runs 20] [EXECUTOR ...]

For each executor, medians of warm runs (one warm-up first) of ``/bin/true``
in the same tiny busybox rootfs (on /dev/shm):

- *ours*: ``Executor.run()`` end to end (helper start, overlay assembly, the
  runtime, teardown);
- *bare*: the runtime alone on a prepared bundle (``runc run``, ``crun run``
  in a private mount namespace with the cgroup v2 workaround, ``runsc run``),
  or for ``ns``/``chroot`` the closest shell command (``unshare -mpfiun
  --fork --mount-proc chroot``, ``chroot``).

The goal: ours <= bare + 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(REPO))

from warm import sh, timed  # noqa: E402

from repeatr.executors import probe  # noqa: E402
from repeatr.executors.base import ExecutorName, load  # noqa: E402
from repeatr.executors.oci import OciExecutor  # noqa: E402
from repeatr.linux import cgroups  # noqa: E402

GOAL_MS = 50.0


def bare_bundle(area: Path, ex: OciExecutor) -> tuple[Path, str]:
    """A bundle over the rootfs itself (read-only), as a hand-made runtime run would use."""
    bundle = area / "bare"
    bundle.mkdir()
    job = probe.true_job(area / "rootfs", area / "unused", ex)
    cid = cgroups.new_name(os.getpid())
    cfg = ex.config(job, "/" + cid)
    cfg["root"] = {"path": os.fspath(area / "rootfs"), "readonly": True}
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/tmp"]
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle, cid


def bare_oci(area: Path, ex: OciExecutor, runs: int) -> float:
    bundle, cid = bare_bundle(area, ex)
    state = area / "bare-state"
    argv = [*ex.global_args(probe.true_job(area / "rootfs", area, ex), state, area / "bare.log"),
            "run", "--bundle", os.fspath(bundle), cid]
    if not ex.hide_cgroup2:
        return timed(lambda: sh(*argv), runs, warmup=True)
    # crun: time the loop inside one private mount namespace with the workaround
    # (host-notes), so the unshare itself is not counted.
    code = (
        "import subprocess,time,statistics,sys\n"
        "argv=sys.argv[2:]\nruns=int(sys.argv[1])\nts=[]\n"
        "for i in range(runs+1):\n"
        "  t=time.perf_counter(); subprocess.run(argv,check=True,stdout=subprocess.DEVNULL)\n"
        "  ts.append(time.perf_counter()-t)\n"
        "print(statistics.median(ts[1:])*1000)\n"
    )
    script = (
        "mount --make-rprivate / && "
        "mount --bind /dev/null /sys/fs/cgroup/unified/cgroup.controllers && "
        'exec "$@"'
    )
    out = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-c", code, str(runs), *argv],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip())


def bare_ms(name: ExecutorName, area: Path, runs: int) -> float:
    rootfs = os.fspath(area / "rootfs")
    if name == ExecutorName.CHROOT:
        return timed(lambda: sh("chroot", rootfs, "/bin/true"), runs, warmup=True)
    if name == ExecutorName.NS:
        return timed(
            lambda: sh("unshare", "-mpfiun", "--fork", "--mount-proc", "chroot", rootfs,
                       "/bin/true"),
            runs,
            warmup=True,
        )
    ex = load(name)()
    assert isinstance(ex, OciExecutor)
    return bare_oci(area, ex, runs)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("executors", nargs="*", default=[n.value for n in ExecutorName])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    print(f"machine: {os.cpu_count()} cpus, kernel {os.uname().release}; "
          f"medians of {args.runs} warm runs of /bin/true; goal: ours <= bare + {GOAL_MS:.0f} ms")
    print(f"{'executor':<8} {'ours ms':>8} {'bare ms':>8} {'over':>7}  goal")
    for raw in args.executors:
        name = ExecutorName(raw)
        ex = load(name)()
        try:
            ex.preflight()
        except Exception as e:  # a report line, not a crash
            print(f"{name:<8} unavailable: {e}")
            continue
        with probe.scratch_rootfs(Path("/dev/shm")) as area:
            ours = probe.median_ms(anyio.run(probe.start_cost, ex, area, args.runs))
            bare = bare_ms(name, area, args.runs)
            shutil.rmtree(area / "bare-state", ignore_errors=True)
        over = ours - bare
        ok = "ok" if over <= GOAL_MS else "MISSED"
        print(f"{name:<8} {ours:8.1f} {bare:8.1f} {over:+7.1f}  {ok}")


if __name__ == "__main__":
    main()
