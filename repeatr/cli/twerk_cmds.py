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
    import anyio
    import msgspec

    from repeatr.cache import Cache
    from repeatr.cli.formula_cmds import warn_about
    from repeatr.cli.main import run_cancellable, ware_disk_limit
    from repeatr.cli.run_cmds import _choose, _net_settings, _state_root
    from repeatr.executors.base import load
    from repeatr.model.formula import load_formula_file
    from repeatr.model.runrecord import encode_pretty
    from repeatr.supervisor import RunEvents, run_formula

    if not os.isatty(0):
        raise UsageError("twerk needs a terminal on stdin; use repeatr run for scripts")
    loaded = load_formula_file(args.formula)
    warn_about(loaded.formula, out)
    command = list(args.command_line)
    if command:
        action = msgspec.structs.replace(loaded.formula.action, exec=tuple(command))
        loaded = msgspec.structs.replace(
            loaded, formula=msgspec.structs.replace(loaded.formula, action=action)
        )
    executor = load(_choose(args.executor if args.executor != "auto" else "ns", loaded, out))()
    cache = Cache(_state_root(args), on_wait=out.log, ware_disk=ware_disk_limit(args))
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
            outcome = await run_formula(
                loaded, executor=executor, cache=cache, events=RunEvents(log=out.log),
                net=_net_settings(args) if hasattr(args, "bridge") else None, tty=terminal,
            )
            await anyio.sleep(0.05)  # let the last output through
            tg.cancel_scope.cancel()
            return outcome

    try:
        with _raw(0):
            outcome = run_cancellable(session, out, "session")
    finally:
        os.close(terminal)
        os.close(controller)
    sys.stdout.write(encode_pretty(outcome.record).decode())
    sys.stdout.flush()
    return 0 if outcome.record.exit_code == 0 else int(Category.JOB_FAILED)
