"""Graphs on a real Dask cluster (``conftest.py``): results, memo, failures, placement, worker death.

The SIGKILL test is last in this file: it kills a worker (its nanny starts
a new one, which the later fixtures' users would otherwise race with).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anyio
import pytest

from repeatr.distributed.client import DaskRun
from repeatr.errors import Category, RepeatrError
from repeatr.graph.model import Graph, GraphEvents, GraphOutcome, NodeResult, NodeState
from repeatr.linux import cgroups
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions
from tests.distributed.cluster import command_line, descendants
from tests.distributed.conftest import DaskEnv
from tests.distributed.graphs import run_locally, step, twelve_steps, ware_ids

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def local_results(dask_env: DaskEnv) -> dict[str, dict[str, str]]:
    """The twelve steps run on this host, without Dask."""
    done = run_locally(
        twelve_steps(dask_env.base), dask_env.warehouse, dask_env.area.base / "local"
    )
    return ware_ids(done)


def client_state(env: DaskEnv) -> Path:
    """A fresh state dir for the client (its memo store)."""
    path = env.area.base / "clients" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    return path


def run_on_dask(
    env: DaskEnv,
    graph: Graph,
    options: RunOptions,
    events: GraphEvents | None = None,
    batch: BatchOptions | None = None,
) -> tuple[DaskRun, GraphOutcome]:
    run = DaskRun(graph, options, batch or BatchOptions(jobs=1), events or GraphEvents(),
                  warehouse=env.warehouse)
    anyio.run(run.run, env.cluster.address, backend="asyncio")
    return run, run.outcome()


def test_twelve_steps_give_what_a_local_run_gives(
    dask_env: DaskEnv, local_results: dict[str, dict[str, str]]
) -> None:
    states: list[tuple[str, NodeState]] = []
    options = RunOptions(state=client_state(dask_env))
    events = GraphEvents(state=lambda name, state, _s: states.append((name, state)))
    run, outcome = run_on_dask(dask_env, twelve_steps(dask_env.base), options, events)

    assert outcome.exit_status == 0, outcome.failed
    assert ware_ids(outcome.done) == local_results
    assert sorted(run.submitted) == sorted(local_results)
    # Every node went pending -> running -> done, in that order, and only then did a reader run.
    for name in local_results:
        mine = [s for n, s in states if n == name]
        assert mine[0] is NodeState.PENDING
        assert mine[-1] in (NodeState.DONE, NodeState.MEMOIZED)
    order = [n for n, s in states if s in (NodeState.DONE, NodeState.MEMOIZED)]
    assert order.index("seed") < order.index("join") < order.index("gather") < order.index("final")
    assert set(run.workers.values()) <= set(dask_env.addresses.values())


def test_a_rerun_runs_nothing(dask_env: DaskEnv, local_results: dict[str, dict[str, str]]) -> None:
    options = RunOptions(state=client_state(dask_env))
    graph = twelve_steps(dask_env.base)
    run_on_dask(dask_env, graph, options)

    states: list[tuple[str, NodeState]] = []
    events = GraphEvents(state=lambda name, state, _s: states.append((name, state)))
    again, outcome = run_on_dask(dask_env, graph, options, events)

    assert again.submitted == []
    assert ware_ids(outcome.done) == local_results
    assert all(r.memo_hit for r in outcome.done.values())
    assert {s for _n, s in states} == {NodeState.PENDING, NodeState.MEMOIZED}


def test_a_failing_job_is_not_retried_and_skips_its_readers(dask_env: DaskEnv) -> None:
    from repeatr.graph.model import Output

    nonce = uuid.uuid4().hex
    nodes = [
        step("bad", dask_env.base, f"echo attempt {nonce}; exit 3"),
        step("after", dask_env.base, "mkdir -p /out", {"/in": Output("bad", "/out")}),
        step("other", dask_env.base, "mkdir -p /out && echo fine > /out/x"),
    ]
    graph = Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))
    lines: list[tuple[str, bytes]] = []
    events = GraphEvents(output=lambda name, _stream, line: lines.append((name, line)))
    _run, outcome = run_on_dask(dask_env, graph, RunOptions(state=client_state(dask_env)), events)

    failed = outcome.failed["bad"]
    assert isinstance(failed, NodeResult) and failed.exit_code == 3
    assert lines == [("bad", f"attempt {nonce}\n".encode())]  # one attempt, one line
    assert outcome.skipped == ("after",)
    assert "other" in outcome.done
    assert outcome.exit_status == Category.JOB_FAILED


def test_a_run_asking_for_an_executor_goes_where_it_is(dask_env: DaskEnv) -> None:
    nonce = uuid.uuid4().hex
    nodes = [step(f"s{n}", dask_env.base, f"mkdir -p /out && echo {n} {nonce} > /out/x")
             for n in range(4)]
    graph = Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))
    options = RunOptions(state=client_state(dask_env), executor="runc")
    run, outcome = run_on_dask(dask_env, graph, options)

    assert outcome.exit_status == 0, outcome.failed
    assert set(run.workers.values()) == {dask_env.addresses["w1"]}  # w2 offers no runc
    assert all('"executor": "runc"' in r.record_json.decode() for r in outcome.done.values())


def test_a_run_asking_for_an_executor_no_worker_has_fails_at_once(dask_env: DaskEnv) -> None:
    graph = Graph({"s": step("s", dask_env.base, "true")}, ("s",))
    options = RunOptions(state=client_state(dask_env), executor="crun")
    run, outcome = run_on_dask(dask_env, graph, options)

    error = outcome.failed["s"]
    assert isinstance(error, RepeatrError) and error.category is Category.EXECUTOR
    assert "executor-crun" in error.message
    assert run.submitted == []
    assert outcome.exit_status == Category.EXECUTOR


def _job_under(pid: int, nonce: str) -> bool:
    """Whether a ``sleep`` of the job carrying ``nonce`` runs below process ``pid``."""
    for child in descendants(pid):
        argv = command_line(child)
        if argv and os.path.basename(argv[0]) == "sleep" and _has_nonce(child, nonce):
            return True
    return False


def _has_nonce(pid: int, nonce: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"NONCE={nonce}".encode() in f.read()
    except OSError:
        return False


def _jobs_with(nonce: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and _has_nonce(int(p), nonce)]


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
    gc = subprocess.run(
        [sys.executable, "-m", "repeatr", "gc"], env={**os.environ, "REPEATR_CACHE": str(state)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert gc.returncode == 0, gc.stderr
    deadline = time.monotonic() + 30
    while _jobs_with(nonce) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _jobs_with(nonce) == []
    runs = state / "runs"
    assert not runs.exists() or os.listdir(runs) == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(state) in line] == []
    assert [g for g in cgroups.ours() if os.path.basename(g).startswith(f"repeatr-{pid}-")] == []
    dask_env.refresh_addresses()  # its nanny started a new worker
