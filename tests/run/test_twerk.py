"""``repeatr twerk``: the container on a real terminal (a pty the test drives)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

import pytest

from .conftest import Runner

pytestmark = pytest.mark.root


def _drive(argv: list[str], keys: bytes) -> tuple[bytes, int]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (no Python work in a forked test process)
        os.execv(sys.executable, [sys.executable, "-m", "repeatr", *argv])
    screen = b""
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's other side closed
                break
            if not chunk:
                break
            screen += chunk
        if not sent and b"$ " in screen:  # the shell's prompt
            os.write(fd, keys)
            sent = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return screen, os.waitstatus_to_exitcode(status)


def test_shell_on_a_terminal(runner: Runner) -> None:
    f = runner.formula("/bin/true")
    screen, code = _drive(
        ["twerk", str(f), "--cache", str(runner.state), "--", "/bin/sh"],
        b"echo $((6*7)); [ -t 0 ] && echo is-a-tty; exit 3\n",
    )
    assert b"42" in screen and b"is-a-tty" in screen
    assert b'"exitCode": 3' in screen
    assert code == 20
    assert runner.work_dirs() == []


def test_twerk_needs_a_terminal(runner: Runner) -> None:
    res = runner.run("twerk", str(runner.formula("/bin/true")))
    assert res.code == 1 and "terminal" in res.stderr
