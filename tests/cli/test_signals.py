"""Signals while an event loop runs are recorded, never raised into it.

A KeyboardInterrupt raised by a signal handler lands between any two
bytecodes: inside asyncio or anyio it once left a worker thread started but
never told to stop, and ``repeatr`` hung at exit (a stress test found it,
about one SIGINT/SIGTERM in a hundred early in a run). Now our handler only
records a signal while the loop runs; the loop's watcher turns it into a
cancellation, including one that came before anyio's receiver was up, and
a second signal during teardown changes nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

_PROGRAM = textwrap.dedent(
    """
    import os, signal, anyio
    from repeatr.cli.entry import install_signal_handlers
    from repeatr.cli.main import run_cancellable
    from repeatr.cli.output import Reporter
    from repeatr.errors import Cancelled

    install_signal_handlers()
    steps = []

    async def job():
        os.kill(os.getpid(), signal.SIGTERM)  # before anyio's signal receiver is up
        steps.append("went on")  # nothing was raised here
        try:
            await anyio.sleep(30)
        finally:
            with anyio.CancelScope(shield=True):
                os.kill(os.getpid(), signal.SIGINT)  # a second signal, during teardown
                await anyio.sleep(0.2)
                steps.append("torn down")

    try:
        run_cancellable(job, Reporter())
    except Cancelled as e:
        print(f"{e}: {steps}")
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_signals_in_the_loop_cancel_it_and_teardown_finishes(backend: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        capture_output=True, text=True, timeout=20,
        env={**os.environ, "REPEATR_ASYNC_BACKEND": backend},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cancelled by SIGTERM: ['went on', 'torn down']", proc.stderr
    assert "SIGTERM: cancelling the run, cleaning up" in proc.stderr
