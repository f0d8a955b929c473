"""SIGKILL of a Dask worker while a job of its runs: Dask runs the step elsewhere, the
results are the same, and the killed worker's host is clean after ``repeatr gc``.

Run after the other Dask tests (file order): the killed worker's nanny starts
a new worker, on a new port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import anyio
import pytest

from repeatr.distributed.client import DaskRun
from repeatr.graph.model import GraphEvents
from repeatr.linux import cgroups
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions
from tests.distributed.cluster import command_line, descendants, has_nonce, jobs_with
from tests.distributed.conftest import DaskEnv, client_state
from tests.distributed.graphs import twelve_steps, ware_ids

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _job_under(pid: int, nonce: str) -> bool:
    """Whether a ``sleep`` of the job carrying ``nonce`` runs below process ``pid``."""
    for child in descendants(pid):
        argv = command_line(child)
        if argv and os.path.basename(argv[0]) == "sleep" and has_nonce(child, nonce):
            return True
    return False


def test_sigkill_of_a_worker_mid_step_still_gives_the_results(
    dask_env: DaskEnv, local_results: dict[str, dict[str, str]]
) -> None:
    nonce = uuid.uuid4().hex
    graph = twelve_steps(dask_env.base, slow=3, nonce=nonce)
    run = DaskRun(graph, RunOptions(state=client_state(dask_env)), BatchOptions(jobs=1),
                  GraphEvents(), warehouse=dask_env.warehouse)
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            anyio.run(run.run, dask_env.cluster.address, backend="asyncio")
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    try:
        victim: tuple[str, int] | None = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            for name in dask_env.states:
                pid = dask_env.cluster.worker_pid(name)
                if _job_under(pid, nonce):
                    victim = (name, pid)
                    break
            time.sleep(0.05)
        assert victim is not None, "the slow step never ran"
        os.kill(victim[1], signal.SIGKILL)
    finally:
        thread.join(timeout=300)
    assert not errors, errors
    outcome = run.outcome()
    assert outcome.exit_status == 0, outcome.failed
    assert ware_ids(outcome.done) == local_results

    # The killed worker's host, after `repeatr gc` on its state dir: nothing left.
    name, pid = victim
    state = dask_env.states[name]
    seen_cgroups = [g for g in cgroups.ours() if f"repeatr-{pid}-" in g]
    gc = subprocess.run(
        [sys.executable, "-m", "repeatr", "gc", "--format", "json"],
        env={**os.environ, "REPEATR_CACHE": str(state)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert gc.returncode == 0, gc.stderr
    deadline = time.monotonic() + 30
    while jobs_with(nonce) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert jobs_with(nonce) == []
    runs = state / "runs"
    assert not runs.exists() or os.listdir(runs) == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(state) in line] == []
    left = [g for g in cgroups.ours() if os.path.basename(g).startswith(f"repeatr-{pid}-")]
    assert left == [], (left, seen_cgroups)
    dask_env.refresh_addresses()  # its nanny started a new worker


def test_a_step_whose_workers_keep_dying_fails_as_an_executor_error(dask_env: DaskEnv) -> None:
    """A scheduler with ``allowed-failures`` 0: the first worker death fails the step."""
    from repeatr.errors import Category, RepeatrError
    from repeatr.graph.model import Graph
    from tests.distributed.cluster import Cluster
    from tests.distributed.graphs import step

    base = dask_env.area.base / "strict" / uuid.uuid4().hex[:8]
    base.mkdir(parents=True)
    cluster = Cluster(base)
    try:
        cluster.start_scheduler(env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
        cluster.start_worker("k1", executors="ns")
        cluster.wait_for_workers(["k1"])
        nonce = uuid.uuid4().hex
        slow = step("slow", dask_env.base, "sleep 60", env={"NONCE": nonce})
        after = step("after", dask_env.base, "true")
        graph = Graph({"slow": slow, "after": after}, ("slow", "after"))
        run = DaskRun(graph, RunOptions(state=client_state(dask_env)), BatchOptions(jobs=1),
                      GraphEvents(), warehouse=dask_env.warehouse)
        thread = threading.Thread(
            target=lambda: anyio.run(run.run, cluster.address, backend="asyncio")
        )
        thread.start()
        try:
            worker = cluster.worker_pid("k1")
            deadline = time.monotonic() + 120
            while not _job_under(worker, nonce) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _job_under(worker, nonce), "the slow step never ran"
            os.kill(worker, signal.SIGKILL)
        finally:
            thread.join(timeout=300)
        error = run.outcome().failed["slow"]
        assert isinstance(error, RepeatrError) and error.category is Category.EXECUTOR
        assert "every worker that ran it died" in error.message
        assert "after" in run.outcome().done
    finally:
        cluster.stop()
