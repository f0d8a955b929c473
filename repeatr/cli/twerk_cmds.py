"""``twerk``: a formula's container, interactively, on your terminal.

For poking around: the same filesystem, user, environment and network as
``repeatr run`` would give, but with a terminal. Never memoized; the record
is printed afterwards (outputs are packed as usual, so you can keep what you
made). The job gets a pty of its own, which we relay to and from yours, so
its shell has job control and your terminal is left as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from repeatr.cli.output import Reporter
from repeatr.errors import Category, UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "twerk",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a formula interactively, on your terminal",
        usage="repeatr twerk [options] FORMULA [-- COMMAND ...]",
        description="Run FORMULA's container with a terminal: the formula's exec, or\n"
        "COMMAND after --, e.g.  repeatr twerk build.json -- /bin/sh\n"
        "Never memoized. Needs a terminal on stdin.",
    )
    p.add_argument("formula", metavar="FORMULA")
    p.add_argument("--executor", "-e", choices=("auto", "ns", "chroot"), default="auto")
    p.set_defaults(func=cmd_twerk, command_line=[])


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The caller's terminal in raw mode (keys go to the job as typed), restored after."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def _copy_size(src: int, dst: int) -> None:
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        fcntl.ioctl(dst, termios.TIOCSWINSZ, fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8))


def cmd_twerk(args: argparse.Namespace, out: Reporter) -> int:
    from pathlib import Path

    import anyio
    from msgspec.structs import replace

    from repeatr.cli.main import cache_root, run_cancellable, ware_disk_limit
    from repeatr.model.runrecord import encode_pretty
    from repeatr.runner import run as runner

    if not os.isatty(0):
        raise UsageError("twerk needs a terminal on stdin; use repeatr run for scripts")
    # Only logs: the job's output goes to the terminal, the record is printed after.
    events = runner.RunnerEvents(log=out.log, warn=lambda m: out.log(m, level="warning"))
    base = runner.RunOptions(
        state=Path(cache_root(args)),
        executor=args.executor if args.executor != "auto" else "ns",
        use_memo=False,
        store_memo=False,
        ware_disk=ware_disk_limit(args),
        command=tuple(args.command_line),
    )
    prepared = runner.prepare(args.formula, base, events)
    controller, terminal = os.openpty()
    _copy_size(0, controller)

    async def relay_in() -> None:
        while True:
            await anyio.wait_readable(0)
            data = os.read(0, 4096)
            if not data:
                return
            os.write(controller, data)

    async def relay_out() -> None:
        while True:
            await anyio.wait_readable(controller)
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the job's side is closed
                return
            if not data:
                return
            os.write(1, data)

    async def session() -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(relay_in)
            tg.start_soon(relay_out)
            result = await runner.execute(prepared, replace(base, tty=terminal), events)
            await anyio.sleep(0.05)  # let the last output through
            tg.cancel_scope.cancel()
            return result.outcome

    try:
        with _raw(0):
            outcome = run_cancellable(session, out, "session")
    finally:
        os.close(terminal)
        os.close(controller)
    sys.stdout.write(encode_pretty(outcome.record).decode())
    sys.stdout.flush()
    return 0 if outcome.record.exit_code == 0 else int(Category.JOB_FAILED)
