"""Leaving without interpreter finalization (``repeatr.cli.entry.leave``) loses nothing.

``repeatr`` ends with ``os._exit`` once its work is done. Everything a normal
exit would still do that can be seen from outside must happen first: the
threads finish, ``atexit`` hooks run, buffered output reaches the pipe, the
exit code is the command's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from repeatr.errors import Category
from tests.run import conftest as run_fixtures

busybox = run_fixtures.busybox
runner = run_fixtures.runner

_LEAVE = textwrap.dedent(
    """
    import atexit, sys, threading, time
    from repeatr.cli.entry import leave

    def late():
        time.sleep(0.2)
        sys.stdout.write("thread\\n")

    threading.Thread(target=late).start()
    atexit.register(lambda: sys.stdout.write("atexit\\n"))
    sys.stdout.write("x" * 100_000 + "\\n")
    sys.stdout.write("no newline")
    sys.stderr.write("err without newline")
    leave(5)
    """
)


def _python(code: str, stdout: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def test_leave_waits_for_threads_runs_atexit_and_flushes() -> None:
    proc = _python(_LEAVE, subprocess.PIPE)
    assert proc.returncode == 5
    assert proc.stdout == "x" * 100_000 + "\nno newlinethread\natexit\n"
    assert proc.stderr == "err without newline"


@pytest.mark.parametrize("buffered", ["", "x" * 100_000])
def test_leave_on_a_broken_pipe_exits_as_sys_exit_does(buffered: str) -> None:
    """EPIPE on the last flush: the same exit code and report as a normal exit."""
    results = []
    for how in ("sys.exit(0)", "leave(0)"):
        read, write = os.pipe()
        os.close(read)
        code = (
            "import sys\nfrom repeatr.cli.entry import leave\n"
            f"sys.stdout.write({buffered!r})\nsys.stdout.write('tail')\n{how}\n"
        )
        try:
            proc = _python(code, write)
        finally:
            os.close(write)
        results.append((proc.returncode, proc.stderr.replace("leave(0)", "sys.exit(0)")))
    assert results[0] == results[1]


@pytest.mark.root
def test_run_record_complete_through_a_pipe(runner: run_fixtures.Runner) -> None:
    ok = runner.formula("/bin/true")
    first = runner.run("run", str(ok), "--executor", "ns")  # capture_output: pipes
    assert first.code == 0, first.stderr
    assert first.record()["exitCode"] == 0
    assert first.stdout.endswith("}\n")
    hit = runner.run("run", str(ok), "--executor", "ns")  # the memo fast path
    assert hit.code == 0 and hit.stdout == first.stdout
    events = runner.run("run", str(ok), "--executor", "ns", "--no-memo", "--format", "json")
    assert events.code == 0, events.stderr
    last = json.loads(events.stdout.splitlines()[-1])
    assert last["event"] == "result" and last["record"]["exitCode"] == 0


@pytest.mark.root
def test_failed_job_record_and_last_warning_through_a_pipe(runner: run_fixtures.Runner) -> None:
    f = runner.formula("/bin/sh", "-c", "seq 1 20000; exit 3")
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == Category.JOB_FAILED
    assert res.record()["exitCode"] == 3
    assert "out| 20000\n" in res.stderr
    assert res.stderr.endswith("repeatr: the job exited 3\n")  # written last


_GC = textwrap.dedent(
    """
    import gc, sys
    from repeatr.cli.entry import pause_gc
    from repeatr.cli.main import main, run_cancellable
    from repeatr.cli.output import Reporter

    async def enabled() -> bool:
        return gc.isenabled()

    pause_gc()
    paused = not gc.isenabled()
    if sys.argv[1] == "loop":
        print(paused, run_cancellable(enabled, Reporter()))
    else:
        code = main(["cache", "ls", "--cache", sys.argv[2]])
        print(paused, gc.isenabled(), code)
    """
)


@pytest.mark.parametrize("where", ["loop", "handler"])
def test_gc_paused_at_start_up_resumes_for_the_work(where: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _GC, where, str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].split()[:2] == ["True", "True"], proc.stdout
