"""``repeatr run --dask tcp://HOST:PORT --warehouse URL``: formulas on a Dask cluster.

The formula files become a flat graph (:mod:`repeatr.distributed.formulas`)
run by :func:`repeatr.distributed.client.run_graph_dask`; what is printed
is what a local ``repeatr run`` prints: one formula's record alone, a
batch's records each after its file name (``--format json``: result events
naming the file), a file that fails with its name, the same exit status.
Only imported when ``--dask`` (or ``REPEATR_DASK``) is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from repeatr.cli.output import Reporter
from repeatr.errors import Category, UsageError

if TYPE_CHECKING:
    from repeatr.graph.model import GraphEvents, GraphOutcome
    from repeatr.runner.run import RunnerEvents


def run_on_dask(args: argparse.Namespace, out: Reporter, files: list[str]) -> int:
    from repeatr.distributed import require

    single = len(files) == 1 and files != ["-"]
    if "-" in files:
        if len(files) > 1:
            raise UsageError("run: - (formula paths on stdin) cannot be mixed with FORMULAs")
        files = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if not args.warehouse:
        raise UsageError(
            "run --dask needs --warehouse URL: where every worker fetches inputs and saves"
            " outputs (ca+file:// on shared storage, ca+http(s)://)"
        )
    if args.output_dir is not None and not single:
        raise UsageError("run: --output-dir takes one formula, not a batch")
    require()
    from repeatr.cli.events import print_record
    from repeatr.cli.main import run_cancellable
    from repeatr.cli.options import run_options
    from repeatr.cli.run_cmds import print_error
    from repeatr.distributed.client import check_warehouse, run_graph_dask
    from repeatr.distributed.formulas import flat_graph
    from repeatr.runner.batch import BatchOptions, most_severe
    from repeatr.runner.run import write_output_dir

    check_warehouse(args.warehouse)
    for flag in ("bridge", "subnet"):
        if getattr(args, flag):
            out.log(f"--{flag} is ignored with --dask: each worker uses its own"
                    f" (REPEATR_{flag.upper()} in its environment)", level="warning")
    options = run_options(args)
    flat = flat_graph(files)
    for file, error in flat.errors:
        if single:
            raise error
        print_error(out, file, error)
    named = {name: (None if single else file) for name, file in flat.files.items()}
    events = graph_events(out, named)

    def record(name: str, record_json: bytes) -> None:
        out.close()
        print_record(out, record_json, named[name])
        if args.output_dir is not None and json.loads(record_json).get("exitCode") == 0:
            write_output_dir(Path(args.output_dir), record_json)

    events.record = record
    batch = BatchOptions(jobs=1, fail_fast=args.fail_fast, ignore_job_exit=args.ignore_job_exit)

    async def run() -> GraphOutcome:
        return await run_graph_dask(
            flat.graph, options, batch, events, scheduler=args.dask, warehouse=args.warehouse
        )

    outcome = run_cancellable(run, out, "batch" if not single else "run", backend="asyncio")
    codes = [error.exit_code for _file, error in flat.errors]
    for name, what in outcome.failed.items():
        if isinstance(what, Exception):
            if single:
                raise what
            print_error(out, flat.files[name], what)
            codes.append(what.exit_code)
        else:
            prefix = "" if single else f"{flat.files[name]}: "
            out.log(f"{prefix}the job exited {what.exit_code}", level="warning")
            if not args.ignore_job_exit:
                codes.append(int(Category.JOB_FAILED))
    if not single:
        jobs_failed = sum(1 for w in outcome.failed.values() if not isinstance(w, Exception))
        errors = len(flat.errors) + len(outcome.failed) - jobs_failed
        skipped = len(outcome.skipped)
        for name in outcome.skipped:
            out.log(f"{flat.files[name]}: skipped (--fail-fast)")
        out.log(
            f"{len(files)} formulas: {len(outcome.done)} succeeded, {jobs_failed} jobs exited"
            f" non-zero, {errors} failed to run, {skipped} skipped"
        )
    return most_severe(codes)


def graph_events(out: Reporter, files: dict[str, str | None]) -> GraphEvents:
    """The graph's events shown as ``repeatr run`` shows a run's (``files``: node -> the
    file its lines are prefixed with, None for no prefix)."""
    from repeatr.cli.events import runner_events
    from repeatr.graph.model import GraphEvents

    per_node: dict[str, RunnerEvents] = {}

    def of(name: str) -> RunnerEvents:
        if name not in per_node:
            per_node[name] = runner_events(out, files.get(name))
        return per_node[name]

    return GraphEvents(
        output=lambda name, stream, line: of(name).output(stream, line),
        log=out.log,
    )
