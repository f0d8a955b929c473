"""``check``: run a formula several times and say whether its outputs are deterministic."""

from __future__ import annotations

import argparse
from typing import Any

from repeatr.cli.output import Reporter
from repeatr.errors import Category
from repeatr.runner import EXECUTORS

#: Kept here too (repeatr.check is heavy to import for --help); a test checks they agree.
EXIT_NOT_DETERMINISTIC = 21


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "check",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a formula N times and compare its outputs (determinism)",
        description="Run FORMULA N times (memoization off; outputs are saved to a private\n"
        "scratch warehouse, never to the context's saveUrls) and compare every\n"
        "output's ware ID across the runs. Where they differ, each run's output\n"
        "is unpacked and the trees are compared: the report lists every path\n"
        "that differs and how (missing, type, content, mode, owner, mtime,\n"
        "symlink target, xattrs). Outputs are packed with the formula's filters,\n"
        "so differences the filters erase (flatten: owners, mtimes) are none.",
        epilog="exit status: 0 deterministic (same outputs, same job exit code in every\n"
        f"run); {EXIT_NOT_DETERMINISTIC} not deterministic; {int(Category.JOB_FAILED)} "
        "every run's job exited with the\nsame non-zero code (outputs compared all the same);"
        " otherwise repeatr's own\nerror code (see repeatr --help).",
    )
    p.add_argument("formula", metavar="FORMULA", help="formula file (JSON)")
    p.add_argument("-n", "--runs", type=int, default=2, metavar="N", help="runs (default 2)")
    p.add_argument(
        "--executor", "-e", choices=EXECUTORS, default="auto",
        help="what runs the job (default: the best this host offers)",
    )
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace, out: Reporter) -> int:
    from pathlib import Path

    from repeatr.cli.events import runner_events
    from repeatr.cli.main import cache_root, run_cancellable, ware_disk_limit
    from repeatr.errors import UsageError
    from repeatr.runner import run as runner

    if args.runs < 2:
        raise UsageError(f"check: -n {args.runs}: at least 2 runs are needed to compare")
    options = runner.RunOptions(
        state=Path(cache_root(args)), executor=args.executor, ware_disk=ware_disk_limit(args)
    )
    events = runner_events(out)

    async def check() -> Any:
        return await runner.check(args.formula, options, events, runs=args.runs)

    report = run_cancellable(check, out, "check")
    out.result(_text(report), **report.to_json())
    if not report.deterministic:
        return EXIT_NOT_DETERMINISTIC
    if report.exit_codes and report.exit_codes[0] != 0:
        return int(Category.JOB_FAILED)
    return 0


def _text(report: Any) -> str:
    lines = []
    for path in sorted({p for r in report.results for p in r}):
        wares = [r.get(path, "-") for r in report.results]
        if len(set(wares)) == 1:
            lines.append(f"{path}: same in all {report.runs} runs: {wares[0]}")
        else:
            lines.append(f"{path}: DIFFERS")
            for n, ware in enumerate(wares, 1):
                lines.append(f"  run {n}: {ware}")
    if len(set(report.exit_codes)) > 1:
        lines.append(f"job exit codes differ: {report.exit_codes}")
    for d in report.differences:
        where = d.output if d.path == "." else f"{d.output}/{d.path}"
        lines.append(f"  {where}: {d.aspect} differs: {d.first} (run 1) vs {d.other} (run {d.run})")
    verdict = "deterministic" if report.deterministic else "NOT deterministic"
    lines.append(f"{verdict} ({report.runs} runs, formula {report.formula_id})")
    return "\n".join(lines)
