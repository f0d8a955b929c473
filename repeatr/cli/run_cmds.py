"""``run`` and ``gc``: run a formula; clean up after runs that died."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repeatr.cli.events import print_record
from repeatr.cli.options import add_dask_options, add_run_options, positive, run_options
from repeatr.cli.output import Format, Reporter
from repeatr.errors import Category, RepeatrError, UsageError

if TYPE_CHECKING:
    from repeatr.runner.batch import BatchItem
    from repeatr.runner.run import RunResult


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="repeatr run [options] FORMULA [FORMULA ...]  |  repeatr run [options] -",
        help="run formulas and print their run records",
        description="Run FORMULA: fetch and unpack its inputs (once per host, into the\n"
        "cache), assemble the container filesystem, run the action, pack the\n"
        "outputs, save them to the context's saveUrls, and print the run record\n"
        "(formula ID, exit code, the ware ID of every output) on stdout.\n"
        "The job's stdout and stderr stream to stderr, prefixed 'out| ' / 'err| '.",
        epilog="exit status: 0 when the job exited 0; 20 when it exited non-zero (the\n"
        "record has its code; --ignore-job-exit gives 0 as the original did);\n"
        "otherwise repeatr's own error code (see repeatr --help).\n\n"
        "A formula run before in the same way (same formula ID and executor,\n"
        "exit code 0) returns its stored record at once; --no-memo runs it anyway.\n"
        "A formula with a mount: input (a host directory) is never memoized.\n\n"
        "FORMULA may be a pipe (/dev/stdin, <(...)); `repeatr run -- FORMULA`\n"
        "works as in the original's scripts.\n\n"
        "batches: with several FORMULAs, or - (their paths on stdin, one a line:\n"
        "`find . -name '*.json' | repeatr run -j 8 -`), they run in one process,\n"
        "at most -j jobs at a time (like make -j: a few more formulas are read\n"
        "and prepared meanwhile), sharing the inputs they have in common. Each\n"
        "record is printed when its formula finishes, after a line with its file name\n"
        "(--format json: a result event naming the file); a formula that fails is\n"
        "reported with its file name and the others go on (--fail-fast: they are\n"
        "cancelled). Exit status: 0 when every formula succeeded, else the most\n"
        "severe of theirs (see docs/running.md).\n\n"
        "--dask tcp://HOST:PORT runs them on a Dask cluster instead (workers started\n"
        "with `dask worker … --preload repeatr.distributed`), saving every output to\n"
        "--warehouse and fetching every input from it; the same records and exit\n"
        "status (see docs/distributed.md; needs pip install 'repeatr[dask]').",
    )
    p.add_argument(
        "formula", metavar="FORMULA", nargs="+",
        help="formula file (JSON), or a pipe; several, or - to read their paths from stdin",
    )
    p.add_argument(
        "--jobs", "-j", type=positive, metavar="N", default=None,
        help="a batch runs at most N jobs at once (default: the number of CPUs);"
        " -j 1: one formula at a time, in the order given",
    )
    p.add_argument(
        "--fail-fast", action="store_true",
        help="a batch stops at the first formula that fails (the rest are cancelled)",
    )
    add_run_options(p, "the job")
    p.add_argument(
        "--ignore-job-exit", action="store_true",
        help="exit 0 even when the job fails (the original's behaviour)",
    )
    p.add_argument(
        "--output-dir", metavar="DIR",
        help="when the job exits 0, also write DIR/record.json and, per output,"
        " DIR/<path with / as _>.ware_id (for make; see docs/make.md)",
    )
    add_dask_options(p, "the formulas")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "gc",
        parents=[common],
        help="remove what dead runs left behind",
        description="Remove what runs that died (SIGKILL, a crash, a reboot) left: work\n"
        "dirs, cache temp dirs, cgroups, and the IP leases, veths and network\n"
        "namespaces of bridged runs. Every run also does this when it starts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_gc)


def _exit_status(exit_code: int, ignore_job_exit: bool) -> int:
    return 0 if exit_code == 0 or ignore_job_exit else int(Category.JOB_FAILED)


def cmd_run(args: argparse.Namespace, out: Reporter) -> int:
    files: list[str] = args.formula
    if args.dask:
        from repeatr.cli.dask_run import run_on_dask

        return run_on_dask(args, out, files)
    if args.warehouse:
        raise UsageError(
            "run: --warehouse is for --dask (a local run saves where the formula says)"
        )
    if len(files) > 1 or files == ["-"]:
        return _run_batch(args, out, files)
    # One formula: a memo hit imports only the model and the memo store (the
    # runner imports the rest on a miss): keep it so.
    from repeatr.cli.events import runner_events
    from repeatr.runner.run import answered, execute, prepare

    options = run_options(args)
    events = runner_events(out)

    def record(record_json: bytes) -> None:
        out.close()  # the packs' progress bars: the record goes to the same terminal
        print_record(out, record_json)

    events.record = record
    prepared = prepare(files[0], options, events)
    if prepared.hit is not None:
        answered(prepared, options, events)
        return 0
    from repeatr.cli.main import run_cancellable
    from repeatr.executors.server import SandboxServer

    async def run() -> RunResult:
        async with SandboxServer(prestarted=args.prestarted_server) as server:
            return await execute(prepared, options, events, server=server)

    result = run_cancellable(run, out)
    if result.exit_code != 0:
        out.log(f"the job exited {result.exit_code}", level="warning")
    return _exit_status(result.exit_code, args.ignore_job_exit)


def _run_batch(args: argparse.Namespace, out: Reporter, files: list[str]) -> int:
    """Several formulas (or ``-``: their paths on stdin) in one process."""
    import sys

    from repeatr.cli.events import runner_events
    from repeatr.cli.main import run_cancellable
    from repeatr.executors.server import SandboxServer
    from repeatr.runner.batch import BatchOptions, most_severe, paths_from, run_batch

    if "-" in files and len(files) > 1:
        raise UsageError("run: - (formula paths on stdin) cannot be mixed with FORMULAs")
    from_stdin = files == ["-"]
    if args.output_dir is not None:
        raise UsageError("run: --output-dir takes one formula, not a batch")
    options = run_options(args)

    def events_for(file: str) -> Any:
        events = runner_events(out, file)

        def record(record_json: bytes) -> None:
            out.close()
            print_record(out, record_json, file)

        events.record = record
        return events

    def on_done(item: BatchItem) -> None:
        if item.error is not None:
            print_error(out, item.formula_file, item.error)
        elif item.result is not None and item.result.exit_code != 0:
            out.log(f"{item.formula_file}: the job exited {item.result.exit_code}", level="warning")

    batch = BatchOptions(
        jobs=args.jobs or os.cpu_count() or 1,
        fail_fast=args.fail_fast,
        ignore_job_exit=args.ignore_job_exit,
    )

    async def run() -> list[BatchItem]:
        async with SandboxServer(prestarted=args.prestarted_server) as server:
            # From stdin: each formula starts as its path arrives (`find ... | repeatr run -`).
            return await run_batch(
                paths_from(sys.stdin.fileno()) if from_stdin else files, options, batch,
                events_for=events_for, on_done=on_done, on_wait=out.log, server=server,
                log=out.log,
            )

    items = run_cancellable(run, out, "batch")
    statuses = [item.exit_status(args.ignore_job_exit) for item in items]
    skipped = [item.formula_file for item in items if item.skipped]
    for file in skipped:
        out.log(f"{file}: skipped (--fail-fast)")
    failed = sum(1 for item in items if item.result is not None and item.result.exit_code)
    errors = sum(1 for item in items if item.error is not None)
    out.log(
        f"{len(items)} formulas: {len(items) - failed - errors - len(skipped)} succeeded,"
        f" {failed} jobs exited non-zero, {errors} failed to run, {len(skipped)} skipped"
    )
    return most_severe(statuses)


def print_error(out: Reporter, file: str, err: RepeatrError) -> None:
    """A formula of a batch that failed: its file name, the error, its category and code."""
    if out.format is Format.JSON:
        out.event(
            "error", file=file, category=err.category.label, exitCode=err.exit_code,
            message=err.message, hint=err.hint,
        )
    else:
        out.close()
        out.line(f"repeatr: {file}: error: {err} [{err.category.label}, exit {err.exit_code}]")


def cmd_gc(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr import workdir
    from repeatr.cache import Cache
    from repeatr.cli.main import cache_root
    from repeatr.linux import cgroups
    from repeatr.net.gc import collect

    state = Path(cache_root(args))
    runs = workdir.reap_stale(state)
    temps = Cache(state).clean_stale()
    groups = cgroups.gc()
    net = collect()
    for what in (*net.links, *map(str, net.namespaces), *(str(lease) for lease in net.leases)):
        out.log(f"reclaimed {what}")
    for failure in net.failures:
        out.log(failure, level="warning")
    for path in runs:
        out.log(f"removed work dir {path}")
    for name in temps:
        out.log(f"removed cache temp dir {name}")
    for group in groups:
        out.log(f"removed cgroup {group}")
    out.result(
        f"removed {len(runs)} work dirs, {len(temps)} cache temp dirs, {len(groups)} cgroups, "
        f"{len(net.leases)} IP leases, {len(net.links)} veths, {len(net.namespaces)} netns",
        workDirs=[str(p) for p in runs],
        cacheTemps=list(temps),
        cgroups=groups,
        leases=[str(lease) for lease in net.leases],
        veths=list(net.links),
        netns=[str(p) for p in net.namespaces],
    )
    return 0


