"""``module run``, ``module plan``, ``module graph``: many formulas wired into one graph.

The library (``repeatr.module``) does the work; this parses and prints.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repeatr.cli.options import add_dask_options, add_run_options, positive, run_options
from repeatr.cli.output import Format, Reporter
from repeatr.errors import UsageError
from repeatr.runner import EXECUTORS

if TYPE_CHECKING:
    from repeatr.distributed.client import DaskGraphRunner
    from repeatr.module.run import Loaded, ModuleOutcome, Prepared

#: The drawings ``module graph`` makes (repeatr.module.render.FORMATS; not
#: imported here: building the parser must not load the module library).
FORMATS = ("text", "dot", "mermaid")

DESCRIPTION = """\
A module (module.tl) wires formulas into a graph: its imports name wares
(from the workspace's catalog, or ingested from git or a directory), its
steps are operations (formulas whose inputs are slot refs: an import `x`,
or `step.output`) or nested modules, and its exports name the wares it
makes for other modules. The workspace is the nearest directory holding
.timeless/; the module is PATH (a directory with module.tl) or the nearest
one above the working directory. The format is the original reach's.
"""

RUN_EPILOG = """\
Every reference is checked before anything runs. Independent steps run at
once (at most -j), each memoized like `repeatr run`; a step that fails stops
the steps that read it (the others finish; --fail-fast cancels them too).
Outputs are saved to the staging warehouse (.timeless/warehouse), and also
copied to every --target warehouse at the end.

stderr shows what reach emerge showed (the plan order, the pinned imports),
then each step's progress; stdout gets the exports as JSON, and the exports
are recorded as the module's "candidate" release, which other modules of the
workspace import as catalog:MODULE:candidate:ITEM (`repeatr catalog release
NAME` makes it a named release).

exit status: 0 when every step exited 0; else the most severe of the steps'
(20 when a job exited non-zero), and stderr names the failed step and shows
its run record.

examples:
  repeatr module run                     the module around the working directory
  repeatr module run example.org/proj -j 4
  repeatr module plan                    what would run, what is memoized
  repeatr module graph --format mermaid  a picture of the wiring
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "module",
        help="run a module: many formulas wired into one graph (module.tl)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="module_command", metavar="COMMAND", parser_class=type(p))
    msub.required = True

    q = msub.add_parser(
        "run",
        parents=[common],
        help="run every step of a module and print its exports",
        description=DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _path(q)
    q.add_argument(
        "--jobs",
        "-j",
        type=positive,
        metavar="N",
        default=None,
        help="run at most N steps' jobs at once (default: the number of CPUs)",
    )
    q.add_argument(
        "--fail-fast",
        action="store_true",
        help="the first step that fails cancels the steps still running",
    )
    q.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="URL",
        help="also copy every output to this warehouse (repeatable)",
    )
    add_run_options(q, "the steps")
    add_dask_options(q, "the steps")
    q.set_defaults(func=cmd_run)

    q = msub.add_parser(
        "plan",
        parents=[common],
        help="the step order, the pinned imports, what is memoized",
        description="Check the module and print, without running anything: the steps in\n"
        "the order the original reach ran them, each import pinned to its ware ID,\n"
        "and for each step whether the memo store answers it (memoized) or it\n"
        "would run. A step reading the output of a step that runs also runs.\n"
        "An ingest:pack import is hashed, not stored.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _path(q)
    q.add_argument(
        "--executor",
        "-e",
        choices=EXECUTORS,
        default="auto",
        help="the executor a run would use (memo entries are per executor)",
    )
    q.set_defaults(func=cmd_plan)

    # --format here is the drawing's (text|dot|mermaid), so this command takes
    # every common option but that one; `repeatr --format json module graph`
    # still gives a JSON result event holding the drawing.
    drawing_common = argparse.ArgumentParser(add_help=False)
    for action in common._actions:
        if "--format" not in action.option_strings:
            drawing_common._add_action(action)
    q = msub.add_parser(
        "graph",
        parents=[drawing_common],
        help="draw the steps, their wiring and exports",
        description="Print the module's graph: imports (pinned wares), steps and exports,\n"
        "an edge per input (labelled with its path). text: an outline; dot: for\n"
        "Graphviz (`repeatr module graph --format dot | dot -Tsvg > graph.svg`);\n"
        "mermaid: a flowchart for Markdown (GitHub and mkdocs-material draw it).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _path(q)
    q.add_argument(
        "--format",
        dest="style",
        choices=FORMATS,
        default="text",
        help="the drawing: text (default), dot or mermaid",
    )
    q.set_defaults(func=cmd_graph)


def _path(q: argparse.ArgumentParser) -> None:
    q.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default=None,
        help="the module's directory (default: the nearest module.tl above the working directory)",
    )


def _header(out: Reporter, loaded: Loaded) -> None:
    """reach emerge's first lines: the step count and order."""
    if out.format is Format.JSON or out.quiet:
        return
    out.line("module loaded")
    out.line(f"module contains {len(loaded.order)} steps")
    out.line("module evaluation plan order:")
    for n, name in enumerate(loaded.order, 1):
        out.line(f"  - {n:02d}: {name}")


def _pins(out: Reporter, prepared: Prepared) -> None:
    if out.format is Format.JSON or out.quiet:
        return
    out.line("imports pinned to hashes:")
    for key, ware in prepared.pins.sorted_items():
        out.line(f"  - {json.dumps(key)}: {ware}")  # Go's %q, as reach printed it


def _report_failures(out: Reporter, outcome: ModuleOutcome) -> None:
    from repeatr.graph.model import NodeResult

    graph = outcome.graph
    for name, failure in graph.failed.items():
        if isinstance(failure, NodeResult):
            message = f"operation {name!r} exit code {failure.exit_code} -- eval halted"
            record = failure.record_json.decode().rstrip("\n")
            if out.format is Format.JSON:
                out.event(
                    "failed",
                    step=name,
                    exitCode=failure.exit_code,
                    record=json.loads(failure.record_json),
                )
            else:
                out.line(f"repeatr: error: step {name!r} failed: {message}")
                out.line(f"step {name!r} run record:\n{record}")
        elif out.format is Format.JSON:
            out.event(
                "failed",
                step=name,
                category=failure.category.label,
                exitCode=failure.exit_code,
                message=failure.message,
            )
        else:
            out.line(
                f"repeatr: error: step {name!r} failed: {failure}"
                f" [{failure.category.label}, exit {failure.exit_code}]"
            )
    for name in graph.skipped:
        if out.format is Format.JSON:
            out.event("skipped", step=name)
        else:
            out.line(f"repeatr: step {name!r} skipped (a step it reads failed, or --fail-fast)")


def _dask_runner(args: argparse.Namespace) -> DaskGraphRunner | None:
    """Dask's graph runner for ``--dask`` (None without it); usage errors first."""
    if not args.dask:
        if args.warehouse:
            raise UsageError("module run: --warehouse is for --dask")
        return None
    if not args.warehouse:
        raise UsageError(
            "module run --dask needs --warehouse URL: where every worker fetches inputs and"
            " saves outputs (ca+file:// on shared storage, ca+http(s)://)"
        )
    from repeatr.distributed import require

    require()
    from repeatr.distributed.client import DaskGraphRunner, check_warehouse

    check_warehouse(args.warehouse)
    return DaskGraphRunner(args.dask, args.warehouse)


def cmd_run(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.cli.graph_progress import graph_progress
    from repeatr.cli.main import run_cancellable
    from repeatr.module.run import exports_json, load, prepare, run_module
    from repeatr.runner.batch import BatchOptions

    loaded = load(Path.cwd(), args.path)
    _header(out, loaded)
    prepared = prepare(loaded)
    _pins(out, prepared)
    options = run_options(args)
    batch = BatchOptions(jobs=args.jobs or os.cpu_count() or 1, fail_fast=args.fail_fast)
    runner = _dask_runner(args)

    async def run() -> ModuleOutcome:
        async with graph_progress(out) as progress:
            return await run_module(
                prepared, options, batch, progress.events, targets=args.target, runner=runner
            )

    outcome = run_cancellable(run, out, "module", backend="asyncio" if runner else None)
    if outcome.exports is None:
        _report_failures(out, outcome)
        return outcome.graph.exit_status or 1
    if out.format is Format.JSON:
        out.result("", exports=dict(outcome.exports), candidate=str(outcome.candidate))
        return 0
    if not out.quiet:
        out.line("module eval complete.")
        out.line("module exports:")
    out.result(exports_json(outcome.exports))
    return 0


def cmd_plan(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.module.run import load, plan, prepare

    loaded = load(Path.cwd(), args.path)
    prepared = prepare(loaded, dry=True)
    steps = plan(prepared, run_options(args))
    if out.format is Format.JSON:
        out.result(
            "",
            order=loaded.order,
            pins=dict(prepared.pins.sorted_items()),
            steps=[{"step": s.name, "status": s.status, "reason": s.reason} for s in steps],
        )
        return 0
    lines = [
        f"module {loaded.layout.name} ({loaded.file})",
        f"{len(loaded.order)} steps, in order:",
    ]
    for n, step in enumerate(steps, 1):
        why = f" ({step.reason})" if step.reason else ""
        lines.append(f"  {n:02d}: {step.name}  {step.status}{why}")
    lines.append("imports pinned to hashes:")
    for key, ware in prepared.pins.sorted_items():
        lines.append(f'  "{key}": {ware}')
    runs = sum(1 for s in steps if s.status == "run")
    lines.append(f"{runs} to run, {sum(1 for s in steps if s.status == 'memoized')} memoized")
    out.result("\n".join(lines))
    return 0


def cmd_graph(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.module.render import render
    from repeatr.module.run import load, prepare

    style = args.style
    prepared = prepare(load(Path.cwd(), args.path), dry=True)
    drawing = render(prepared, style)
    out.result(drawing, style=style, graph=drawing)
    return 0
