"""``run`` and ``gc``: run a formula; clean up after runs that died."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from repeatr.cli.output import Format, Reporter
from repeatr.errors import Cancelled, Category

EXECUTORS = ("auto", "ns", "chroot", "runc", "crun", "gvisor")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a formula and print its run record",
        description="Run FORMULA: fetch and unpack its inputs (once per host, into the\n"
        "cache), assemble the container filesystem, run the action, pack the\n"
        "outputs, save them to the context's saveUrls, and print the run record\n"
        "(formula ID, exit code, the ware ID of every output) on stdout.\n"
        "The job's stdout and stderr stream to stderr, prefixed 'out| ' / 'err| '.",
        epilog="exit status: 0 when the job exited 0; 20 when it exited non-zero (the\n"
        "record has its code; --ignore-job-exit gives 0 as the original did);\n"
        "otherwise repeatr's own error code (see repeatr --help).\n\n"
        "A formula run before in the same way (same formula ID and executor,\n"
        "exit code 0) returns its stored record at once; --no-memo runs it anyway.",
    )
    p.add_argument("formula", metavar="FORMULA", help="formula file (JSON)")
    p.add_argument(
        "--executor", "-e", choices=EXECUTORS, default="auto",
        help="what runs the job (default: the best this host offers)",
    )
    p.add_argument("--no-memo", action="store_true", help="run even if a record is stored")
    p.add_argument(
        "--ignore-job-exit", action="store_true",
        help="exit 0 even when the job fails (the original's behaviour)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "gc",
        parents=[common],
        help="remove what dead runs left behind",
        description="Remove the work dirs and cache temp dirs of runs that died (killed\n"
        "by SIGKILL, a crash, a reboot). Every run also does this when it starts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_gc)


def _state_root(args: argparse.Namespace) -> Path:
    from repeatr.cli.main import cache_root

    return Path(cache_root(args))


def _exit_status(exit_code: int, ignore_job_exit: bool) -> int:
    return 0 if exit_code == 0 or ignore_job_exit else int(Category.JOB_FAILED)


def cmd_run(args: argparse.Namespace, out: Reporter) -> int:
    # The memo hit path imports only the memo store (and, on a miss by file
    # content, the model): keep it so. Two keys lead to a stored record: the
    # formula file's bytes (no parsing at all) and the formula ID.
    from repeatr.memo import MemoStore, file_key, memo_key

    state = _state_root(args)
    memo = MemoStore(state)
    fast_key = file_key(args.formula, args.executor)
    if not args.no_memo and fast_key is not None and (stored := memo.get(fast_key)):
        out.debug("memo hit (formula file seen before)")
        _print_record(out, stored)
        return 0

    from repeatr.model.formula import load_formula_file
    from repeatr.model.formula_id import formula_id

    loaded = load_formula_file(args.formula)
    fid = formula_id(loaded.formula)
    keys = [memo_key(fid, args.executor), *([fast_key] if fast_key else [])]
    if not args.no_memo and (stored := memo.get(keys[0])):
        out.debug(f"memo hit: {fid}")
        for key in keys[1:]:
            memo.put(key, stored)
        _print_record(out, stored)
        return 0
    return _run(args, out, loaded, state, memo, keys)


def _print_record(out: Reporter, record_json: bytes) -> None:
    if out.format is Format.JSON:
        import json

        out.result("", record=json.loads(record_json))
    else:
        out.stdout.write(record_json.decode())
        out.stdout.flush()


def _run(
    args: argparse.Namespace,
    out: Reporter,
    loaded: Any,
    state: Path,
    memo: Any,
    keys: list[str],
) -> int:
    import anyio

    from repeatr.cache import Cache
    from repeatr.executors.base import load
    from repeatr.model.runrecord import encode_pretty
    from repeatr.supervisor import RunEvents, run_formula

    name = _choose(args.executor, out)
    executor = load(name)()
    executor.preflight()

    def output(stream: str, line: bytes) -> None:
        if out.format is Format.JSON:
            out.event("output", stream=stream, line=line.decode("utf-8", "replace"))
        elif not out.quiet:
            out.close()  # the job is running: fetch progress is over
            prefix = "out| " if stream == "stdout" else "err| "
            out.line(prefix + line.decode("utf-8", "replace").rstrip("\n"))

    events = RunEvents(
        log=out.log,
        debug=out.debug,
        output=output,
        progress=lambda phase, done: out.progress(phase, done),
    )
    cache = Cache(state, on_wait=out.log)
    cancelled_by: list[str] = []

    async def main() -> Any:
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                with anyio.open_signal_receiver(
                    signal.SIGINT, signal.SIGTERM, signal.SIGHUP
                ) as signals:
                    async for signum in signals:
                        cancelled_by.append(signal.Signals(signum).name)
                        out.log(f"{cancelled_by[-1]}: cancelling the run, cleaning up")
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            outcome = await run_formula(loaded, executor=executor, cache=cache, events=events)
            tg.cancel_scope.cancel()
            return outcome

    outcome = anyio.run(main, backend=_backend())
    if cancelled_by:
        raise Cancelled(f"cancelled by {cancelled_by[0]}")
    record_json = encode_pretty(outcome.record)
    if outcome.record.exit_code == 0:
        for key in keys:
            memo.put(key, record_json)
    _print_record(out, record_json)
    if outcome.record.exit_code != 0:
        out.log(f"the job exited {outcome.record.exit_code}", level="warning")
    return _exit_status(outcome.record.exit_code, args.ignore_job_exit)


def _backend() -> str:
    """asyncio by default; REPEATR_ASYNC_BACKEND=trio runs the same code on trio."""
    import os

    return os.environ.get("REPEATR_ASYNC_BACKEND", "asyncio")


def _choose(requested: str, out: Reporter) -> str:
    """The executor to use; for ``auto``, the best one whose preflight passes."""
    if requested != "auto":
        return requested
    from repeatr.errors import ExecutorError
    from repeatr.executors.base import available_names, load

    reasons = []
    # Best isolation first, then speed: ns isolates everything and starts fastest.
    for name in sorted(available_names(), key=lambda n: n != "ns"):
        try:
            load(name)().preflight()
        except ExecutorError as err:
            reasons.append(f"{name}: {err}")
            continue
        for reason in reasons:
            out.debug(f"executor not chosen: {reason}")
        out.debug(f"executor auto: chose {name}")
        return str(name)
    raise ExecutorError("no executor can run here: " + "; ".join(reasons))


def cmd_gc(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr import workdir
    from repeatr.cache import Cache

    state = _state_root(args)
    runs = workdir.reap_stale(state)
    temps = Cache(state).clean_stale()
    for path in runs:
        out.log(f"removed work dir {path}")
    for name in temps:
        out.log(f"removed cache temp dir {name}")
    out.result(
        f"removed {len(runs)} work dirs, {len(temps)} cache temp dirs",
        workDirs=[str(p) for p in runs],
        cacheTemps=list(temps),
    )
    return 0


