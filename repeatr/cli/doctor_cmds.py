"""``repeatr doctor``: which executors work here, what each costs, and the kernel's features."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

from repeatr.cli.output import Reporter


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[common],
        help="check executors, runtimes and kernel features",
        description="For every executor: available or not (and the fix), its version, what it\n"
        "isolates, which limits it enforces, and its measured start cost (a /bin/true run\n"
        "in a tiny busybox rootfs; needs root). Then the kernel's features and which\n"
        "executor `--executor auto` picks.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--no-measure", action="store_true", help="skip the start-cost runs")
    p.add_argument("--runs", type=int, default=3, metavar="N", help="timed runs per executor")
    p.set_defaults(func=cmd_doctor)


def kernel_features() -> dict[str, Any]:
    from repeatr.linux import cgroups

    try:
        with open("/proc/filesystems") as f:
            filesystems = {line.split()[-1] for line in f if line.strip()}
    except OSError:
        filesystems = set()
    namespaces = sorted(
        k for k in ("mnt", "pid", "net", "ipc", "uts", "user", "cgroup")
        if os.path.exists(f"/proc/self/ns/{k}")
    )
    return {
        "kernel": platform.release(),
        "overlayfs": "overlay" in filesystems,
        "namespaces": namespaces,
        "cgroups": {
            "layout": cgroups.layout(),
            "v1Controllers": sorted(cgroups.controllers()),
        },
        "root": os.geteuid() == 0,
        "seccomp": seccomp_features(),
    }


def seccomp_features() -> dict[str, Any]:
    """Whether the default seccomp profile can be compiled here (libseccomp's version)."""
    from repeatr.executors import seccomp
    from repeatr.linux import libseccomp

    try:
        version: str | None = ".".join(str(n) for n in libseccomp.version())
    except OSError:
        version = None
    return {"profile": seccomp.PROFILE, "libseccomp": version}


def _version(ex: Any) -> str:
    from repeatr.errors import ExecutorError
    from repeatr.executors.oci import OciExecutor
    from repeatr.executors.vm import VmExecutor

    if isinstance(ex, OciExecutor | VmExecutor):
        try:
            return ex.version()
        except ExecutorError as e:
            return f"unknown ({e.message})"
    return f"built in (Python {platform.python_version()})"


def executor_report(name: str, measure: bool, runs: int, area: Any) -> dict[str, Any]:
    import anyio

    from repeatr.errors import RepeatrError
    from repeatr.executors import probe
    from repeatr.executors.base import load

    ex = load(name)()
    caps = ex.capabilities()
    entry: dict[str, Any] = {
        "name": name,
        "available": True,
        "problem": None,
        "fix": None,
        "version": None,
        "isolates": sorted(caps.isolates),
        "networks": sorted(caps.networks),
        "limits": sorted(caps.limits),
        "startMs": None,
        "note": None,
    }
    try:
        ex.preflight()
    except RepeatrError as e:
        entry.update(available=False, problem=e.message, fix=e.hint)
        return entry
    entry["version"] = _version(ex)
    if name == "vm":
        from repeatr.vm import qemu

        # A VM run costs seconds: one timed run (after the warm-up) is enough to say so.
        runs = 1
        entry["accel"] = qemu.accel_description()
    if not measure:
        entry["note"] = "not measured (--no-measure)"
    elif area is None:
        entry["note"] = "not measured: needs root"
    else:
        try:
            times = anyio.run(probe.start_cost, ex, area, runs)
            entry["startMs"] = probe.median_ms(times)
        except RepeatrError as e:
            entry["note"] = f"measuring failed: {e}"
    return entry


def _text(report: dict[str, Any]) -> str:
    lines = ["executors:"]
    for e in report["executors"]:
        if not e["available"]:
            lines.append(f"  {e['name']:<7} UNAVAILABLE: {e['problem']}")
            if e["fix"]:
                lines.append(f"          fix: {e['fix']}")
            lines.append(f"          isolates {', '.join(e['isolates'])}; "
                         f"limits {', '.join(e['limits']) or 'none'}")
            continue
        cost = f"{e['startMs']} ms /bin/true" if e["startMs"] is not None else e["note"]
        lines.append(f"  {e['name']:<7} ok  {e['version']}")
        lines.append(f"          isolates {', '.join(e['isolates'])}; networks "
                     f"{', '.join(e['networks'])}; limits {', '.join(e['limits']) or 'none'}")
        lines.append(f"          start cost: {cost}")
        if "accel" in e:
            lines.append(f"          acceleration: {e['accel']}")
    k = report["kernel"]
    lines += [
        "kernel:",
        f"  release     {k['kernel']}",
        f"  overlayfs   {'yes' if k['overlayfs'] else 'NO (modprobe overlay)'}",
        f"  namespaces  {', '.join(k['namespaces'])}",
        f"  cgroups     {k['cgroups']['layout']}; v1 controllers: "
        f"{', '.join(k['cgroups']['v1Controllers']) or 'none'}",
        f"  root        {'yes' if k['root'] else 'no (every executor needs root)'}",
        f"  seccomp     {k['seccomp']['profile']}; libseccomp "
        + (k["seccomp"]["libseccomp"] or "MISSING (apt-get install libseccomp2)"),
    ]
    st = report["state"]
    if "problem" in st:
        lines += ["state:", f"  {st['problem']}"]
    else:
        lines += [
            "state:",
            f"  cache       {st['cache']['path']}: {st['cache']['shelves']} shelves, "
            f"{st['cache']['size']}" + ("" if st["cache"]["writable"] else "  NOT WRITABLE"),
            f"  work dirs   {st['runs']['path']}: {st['runs']['count']}"
            + (f" ({st['runs']['dead']} of dead runs: repeatr gc)" if st["runs"]["dead"] else ""),
            f"  IP index    {st['net']['path']}: {st['net']['leases']} leases",
        ]
    auto = report["auto"]
    lines.append(f"auto picks: {auto['chosen'] or 'nothing'}")
    lines += [f"  {r}" for r in auto["reasons"]]
    return "\n".join(lines)


def state_report(args: argparse.Namespace) -> dict[str, Any]:
    """Where the cache, work dirs and IP index live, and how big they are."""
    from pathlib import Path

    from repeatr import workdir
    from repeatr.cache import Cache
    from repeatr.cli.main import cache_root
    from repeatr.model.units import format_size
    from repeatr.net.config import DEFAULT_HOST

    root = Path(cache_root(args))
    try:
        shelves = Cache(root).ls() if root.is_dir() else []
        runs = workdir.runs_dir(root)
        names = sorted(os.listdir(runs)) if runs.is_dir() else []
    except OSError as e:  # not root: the state is root's (0700)
        return {"problem": f"cannot read {root}: {e.strerror} (the state belongs to root)"}
    dead = [n for n in names if (o := workdir.owner_of(runs / n)) is not None and not o.is_alive()]
    leases = 0
    if DEFAULT_HOST.state_dir.is_dir():
        for network in DEFAULT_HOST.state_dir.iterdir():
            if (network / "leases").is_dir():
                leases += len(os.listdir(network / "leases"))
    writable = os.access(root if root.exists() else root.parent, os.W_OK)
    return {
        "cache": {
            "path": str(root), "shelves": len(shelves),
            "size": format_size(sum(s.size for s in shelves)), "writable": writable,
        },
        "runs": {"path": str(runs), "count": len(names), "dead": len(dead)},
        "net": {"path": str(DEFAULT_HOST.state_dir), "leases": leases},
    }


def cmd_doctor(args: argparse.Namespace, out: Reporter) -> int:
    from contextlib import ExitStack

    from repeatr.errors import ExecutorError
    from repeatr.executors import probe
    from repeatr.executors.base import available_names
    from repeatr.executors.choose import choose

    measure = not args.no_measure
    with ExitStack() as stack:
        area = None
        if measure and os.geteuid() == 0:
            try:
                area = stack.enter_context(probe.scratch_rootfs())
            except (ExecutorError, OSError) as e:
                out.log(f"cannot build the test rootfs: {e}", level="warning")
        executors = []
        for name in available_names():
            out.debug(f"checking {name}")
            executors.append(executor_report(str(name), measure, max(1, args.runs), area))
    try:
        chosen, reasons = choose()
        auto: dict[str, Any] = {"chosen": str(chosen), "reasons": reasons}
    except ExecutorError as e:
        auto = {"chosen": None, "reasons": [e.message]}
    report = {
        "executors": executors,
        "kernel": kernel_features(),
        "auto": auto,
        "state": state_report(args),
        "python": sys.version.split()[0],
    }
    out.result(_text(report), **report)
    return 0 if auto["chosen"] else 42
