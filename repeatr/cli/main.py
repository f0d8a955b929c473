"""Entry point: parse arguments, run one command, map errors to exit codes.

Each command group lives in its own module with a ``register(subparsers)``
function; handlers import the heavy parts of the library lazily so that
``--help`` (and later the memoized ``run`` path) stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from repeatr import __version__
from repeatr.cli.entry import (
    DEFAULT_STATE,
    deliver_pending_signal,
    install_signal_handlers,
    pending_signal,
    resume_gc,
    set_in_loop,
    state_root,
)
from repeatr.cli.output import ALIASES as FORMAT_ALIASES
from repeatr.cli.output import Format, Reporter
from repeatr.errors import Cancelled, Category, RepeatrError, collapse

if TYPE_CHECKING:
    from repeatr.executors.spawn import ServerProcess

T = TypeVar("T")

DESCRIPTION = """\
Run processes in containers assembled from content-addressed filesets.

A fileset packed into a tar is a *ware*, named by a hash of its contents
(e.g. tar:5y6NvK6GB...). Wares live in *warehouses* (file://, ca+file://,
http(s)://, ca+http(s)://). A *formula* names the wares to put where, the
command to run, and the paths to pack afterwards.
"""

EPILOG = """\
examples:
  repeatr pack ./rootfs --target ca+file:///srv/wares/   pack a dir, store the ware
  repeatr scan busybox.tgz                               the ware ID of an archive
  repeatr unpack tar:5y6N... ./out --source ca+file:///srv/wares/
  repeatr formula id hello.json                          the formula's ID
  repeatr cache ls                                       what is unpacked locally
  repeatr module run                                     run the module (module.tl) here

exit codes: 1 usage, 2 internal, 3 warehouse unavailable, 4 warehouse unwritable,
  5 ware not found, 6 ware corrupt, 7 hash mismatch, 8 cancelled, 9 cache,
  10 assembly invalid, 11 pack invalid, 12 inoperable path, 13 filter rejection,
  14 disk full, 40 job invalid, 41 cache problem during a run, 42 executor problem.
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ours (exit 1) instead of argparse's exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _ArgumentError(f"{self.prog}: {message}")


class _ArgumentError(RepeatrError):
    category = Category.USAGE


#: Which module registers each command. Only the module of the command being run
#: is imported (all of them for --help), so a command pays for its own parser only.
COMMAND_MODULES = {
    "run": "run_cmds",
    "gc": "run_cmds",
    "check": "check_cmds",
    "scan": "ware_cmds",
    "pack": "ware_cmds",
    "unpack": "ware_cmds",
    "mirror": "ware_cmds",
    "import": "import_cmds",
    "formula": "formula_cmds",
    "cache": "cache_cmds",
    "doctor": "doctor_cmds",
    "completion": "completion_cmds",
    "net": "net_cmds",
    "twerk": "twerk_cmds",
    "explain": "explain_cmds",
    "module": "module_cmds",
    "catalog": "catalog_cmds",
}

#: Commands whose handler imports what it needs, then runs in ``run_cancellable``:
#: the GC pause of start-up (``repeatr.cli.entry.pause_gc``) lasts until the event
#: loop runs. Any other command resumes the GC before its handler is called.
LOOP_COMMANDS = frozenset({"run", "check", "twerk"})


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    first = next((a for a in argv or () if not a.startswith("-")), None)
    if first in COMMAND_MODULES:
        return [COMMAND_MODULES[first]]
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only the subcommands it can need are built."""
    parser = _Parser(
        prog="repeatr",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"repeatr {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--format",
        choices=[*(f.value for f in Format), *FORMAT_ALIASES],
        default=argparse.SUPPRESS,
        help="text (default; also ansi, dumb: the original's names): the result alone"
        " on stdout; json: one event per line",
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="log every step, show tracebacks",
    )
    common.add_argument(
        "--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
        help="only warnings and errors on stderr",
    )
    common.add_argument(
        "--cache",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"fileset cache directory (env REPEATR_CACHE, default {DEFAULT_STATE})",
    )
    common.add_argument(
        "--ware-disk-limit",
        metavar="LIMIT",
        default=argparse.SUPPRESS,
        help="what one ware may write to disk when unpacked: a share of the free space"
        " there (50%%), a size (20G) or none (env REPEATR_WARE_DISK_LIMIT, default 50%%)",
    )
    # The common options work before and after the command name.
    for action in common._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in _modules_for(argv):
        importlib.import_module(f"repeatr.cli.{name}").register(sub, common)
    return parser


def cache_root(args: argparse.Namespace) -> str:
    return state_root(getattr(args, "cache", None))


def ware_disk_limit(args: argparse.Namespace) -> str:
    """--ware-disk-limit, else REPEATR_WARE_DISK_LIMIT, else the default share of free space."""
    from repeatr.fileset.limits import DEFAULT_WARE_DISK

    return (
        getattr(args, "ware_disk_limit", None)
        or os.environ.get("REPEATR_WARE_DISK_LIMIT")
        or DEFAULT_WARE_DISK
    )


def run_cancellable(
    fn: Callable[[], Awaitable[T]], out: Reporter, what: str = "run", backend: str | None = None
) -> T:
    """Run ``fn`` in an event loop that Ctrl-C, SIGTERM and SIGHUP cancel.

    Cancelling lets ``fn`` tear everything down, then raises ``Cancelled``
    (exit 8). While the loop runs, our own handlers only record a signal
    (``repeatr.cli.entry.set_in_loop``): one that lands before anyio's
    receiver is up is picked up when it is, and one after the receiver has
    closed (a second Ctrl-C during teardown) changes nothing. Never an
    exception raised into the loop's or anyio's code at a random point.
    ``backend``: the event loop (default ``REPEATR_ASYNC_BACKEND``, else asyncio).
    """
    import anyio

    cancelled_by: list[str] = []

    async def main() -> T | None:
        resume_gc()
        async with anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                name = None
                try:
                    with anyio.open_signal_receiver(
                        signal.SIGINT, signal.SIGTERM, signal.SIGHUP
                    ) as signals:
                        # One that came before the receiver was up: recorded by our handler.
                        name = pending_signal()
                        if name is None:
                            async for signum in signals:
                                name = signal.Signals(signum).name
                                break
                finally:
                    # Closing the receiver put back the default handlers: a second
                    # signal (during teardown) must be recorded, not kill us.
                    install_signal_handlers()
                if name is None:
                    return
                cancelled_by.append(name)
                out.log(f"{name}: cancelling the {what}, cleaning up")
                tg.cancel_scope.cancel()

            tg.start_soon(watch_signals)
            result = await fn()
            tg.cancel_scope.cancel()
            return result
        return None  # cancelled (the task group swallowed it)

    deliver_pending_signal()  # one deferred during an import must not fire inside the loop
    set_in_loop(True)
    try:
        backend = backend or os.environ.get("REPEATR_ASYNC_BACKEND", "asyncio")
        result = anyio.run(main, backend=backend)
    finally:
        set_in_loop(False)
        install_signal_handlers()
    if cancelled_by or result is None:
        raise Cancelled(f"cancelled by {cancelled_by[0] if cancelled_by else 'SIGINT'}")
    return result


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed; a twerk command line after "--" is left out (main adds it)."""
    if "--" not in argv:
        return parser.parse_args(argv)
    before = list(argv[: list(argv).index("--")])
    try:
        args = parser.parse_args(before)
    except _ArgumentError:
        args = None
    if args is not None and hasattr(args, "command_line"):
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, prestarted: ServerProcess | None = None) -> int:
    """Run one command; return (and, as a console script, exit with) its exit code.

    ``prestarted``: a sandbox server ``repeatr.cli.entry`` started for ``run``
    (``args.prestarted_server``; the caller closes it if the command did not).
    """
    install_signal_handlers()
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    debug = "--debug" in argv
    reporter = Reporter(debug=debug)
    try:
        # For twerk, everything after "--" is a command line for the job, never
        # ours; for any other command "--" means what it always does: what
        # follows is an operand (the original's `repeatr run -- FORMULA`).
        args = _parse(parser, argv)
        if hasattr(args, "command_line"):
            after = list(argv[argv.index("--") + 1 :]) if "--" in argv else []
            args.command_line = after
        args.prestarted_server = prestarted
        reporter = Reporter(
            Format(getattr(args, "format", "text")),
            debug=getattr(args, "debug", False),
            quiet=getattr(args, "quiet", False),
        )
        if args.command not in LOOP_COMMANDS:
            resume_gc()
        try:
            code: int = args.func(args, reporter)
        except BaseExceptionGroup as group:
            raise collapse(group) from None
        finally:
            reporter.close()
        return code
    except RepeatrError as err:
        if reporter.debug_enabled:
            import traceback

            traceback.print_exc(file=sys.stderr)
        reporter.error(err)
        return err.exit_code
    except KeyboardInterrupt as interrupt:
        cancelled = Cancelled(f"cancelled by {str(interrupt) or 'SIGINT'}")
        reporter.error(cancelled)
        return cancelled.exit_code
    except Exception as exc:  # the one place unexpected errors are turned into exit 2
        import traceback

        traceback.print_exc(file=sys.stderr)
        internal = RepeatrError(f"internal error: {exc!r} (please report this with the traceback)")
        reporter.error(internal)
        return internal.exit_code
