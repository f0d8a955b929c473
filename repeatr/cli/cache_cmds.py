"""``cache ls``, ``cache gc``, ``cache verify``: the local fileset cache."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from repeatr.cli.output import Reporter
from repeatr.model.units import format_size, parse_size


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cache",
        help="list, collect and verify the fileset cache",
        description="The fileset cache holds every ware unpacked on this host (a shelf),\n"
        "so each is unpacked once. --cache DIR or REPEATR_CACHE choose it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="cache_command", metavar="COMMAND", parser_class=type(p))
    csub.required = True
    q = csub.add_parser("ls", parents=[common], help="list shelves, least recently used first")
    q.set_defaults(func=cmd_ls)
    q = csub.add_parser(
        "gc",
        parents=[common],
        help="remove least recently used shelves",
        description="Remove least recently used shelves until the cache holds at most\n"
        "--max-size. A shelf in use by a running job is never removed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--max-size", metavar="SIZE", required=True, help="e.g. 10G, 512M, 0")
    q.set_defaults(func=cmd_gc)
    q = csub.add_parser(
        "verify",
        parents=[common],
        help="re-hash every shelf against its recorded strict ID",
    )
    q.set_defaults(func=cmd_verify)


def _cache(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from repeatr.cache import Cache
    from repeatr.cli.main import cache_root

    return Cache(Path(cache_root(args)))


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_ls(args: argparse.Namespace, out: Reporter) -> int:
    shelves = _cache(args).ls()
    rows = [
        f"{info.ware}  {format_size(info.size):>6}  {_when(info.last_used)}"
        + ("  in use" if info.in_use else "")
        for info in shelves
    ]
    out.result(
        "\n".join(rows) if rows else "(cache is empty)",
        shelves=[
            {"ware": str(i.ware), "size": i.size, "lastUsed": i.last_used, "inUse": i.in_use}
            for i in shelves
        ],
    )
    return 0


def cmd_gc(args: argparse.Namespace, out: Reporter) -> int:
    limit = parse_size(args.max_size, "--max-size")
    report = _cache(args).gc(limit)
    for info in report.removed:
        out.log(f"removed {info.ware} ({format_size(info.size)})")
    for info in report.kept_in_use:
        out.log(f"kept {info.ware}: in use")
    out.result(
        f"removed {len(report.removed)} shelves, {format_size(report.freed)} freed",
        removed=[str(i.ware) for i in report.removed],
        freed=report.freed,
    )
    return 0


def cmd_verify(args: argparse.Namespace, out: Reporter) -> int:
    problems = _cache(args).verify()
    for problem in problems:
        out.log(str(problem), level="error")
    out.result(
        "all shelves intact" if not problems else f"{len(problems)} damaged shelves",
        problems=[str(p) for p in problems],
    )
    return 0 if not problems else 9
