"""Graphs on a real Dask cluster (``conftest.py``): results, memo, failures, placement, worker death.

The SIGKILL of a worker is in ``test_dask_worker_death.py`` (run last).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import anyio
import pytest

from repeatr.distributed.client import DaskRun
from repeatr.errors import Category, RepeatrError
from repeatr.graph.model import Graph, GraphEvents, GraphOutcome, NodeResult, NodeState
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions
from tests.distributed.cluster import jobs_with, wait_until
from tests.distributed.conftest import DaskEnv, client_state, run_on_dask
from tests.distributed.graphs import step, twelve_steps, ware_ids

pytestmark = [pytest.mark.root, pytest.mark.slow]


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


def test_pinned_inputs_only_the_client_reaches_are_copied_to_the_warehouse(
    dask_env: DaskEnv, tmp_path: Path
) -> None:
    from dataclasses import replace

    from repeatr.fileset.pack import pack_dir
    from repeatr.model.filters import Filters
    from repeatr.warehouse import warehouse_for
    from tests.warehouse.conftest import ca_path

    nonce = uuid.uuid4().hex
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "data").write_text(nonce)
    local = dask_env.area.base / "client-wh" / nonce
    local.mkdir(parents=True)
    with warehouse_for(f"ca+file://{local}/").start_save() as session:
        data = pack_dir(tree, session.file, filters=Filters())
        session.commit(data)
    node = step("read", dask_env.base, "mkdir -p /out && cp /data/data /out/copy",
                {"/data": str(data)})
    node = replace(node, fetch_urls={"/data": (f"ca+file://{local}/",)})
    _run, outcome = run_on_dask(
        dask_env, Graph({"read": node}, ("read",)), RunOptions(state=client_state(dask_env))
    )

    assert outcome.exit_status == 0, outcome.failed
    assert ca_path(dask_env.area.base / "www" / "dav", data).is_file()


def test_fail_fast_cancels_a_job_running_on_a_worker(dask_env: DaskEnv) -> None:
    nonce = uuid.uuid4().hex
    nodes = [
        step("slow", dask_env.base, "sleep 600", env={"NONCE": nonce}),
        step("bad", dask_env.base, "sleep 1; exit 3"),
    ]
    graph = Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))
    run = DaskRun(graph, RunOptions(state=client_state(dask_env)),
                  BatchOptions(jobs=1, fail_fast=True), GraphEvents(), warehouse=dask_env.warehouse)
    anyio.run(run.run, dask_env.cluster.address, backend="asyncio")
    outcome = run.outcome()

    assert isinstance(outcome.failed["bad"], NodeResult)
    assert outcome.skipped == ("slow",)
    # Cancelled on its worker: its job is gone long before its sleep would end.
    assert wait_until(lambda: not jobs_with(nonce)), jobs_with(nonce)


def test_a_step_reading_an_output_its_step_lacks_fails_with_a_usage_error(
    dask_env: DaskEnv,
) -> None:
    from repeatr.graph.model import Output

    nonce = uuid.uuid4().hex
    nodes = [
        step("a", dask_env.base, f"mkdir -p /out && echo {nonce} > /out/x"),
        step("b", dask_env.base, "true", {"/in": Output("a", "/missing")}),
    ]
    graph = Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))
    options = RunOptions(state=client_state(dask_env))
    # First on the worker (a runs there), then on the client (a is memoized).
    for _ in range(2):
        _run, outcome = run_on_dask(dask_env, graph, options)
        error = outcome.failed["b"]
        assert isinstance(error, RepeatrError) and error.category is Category.USAGE
        assert "'/missing'" in error.message
        assert outcome.exit_status == Category.USAGE


def test_a_worker_whose_sandbox_server_died_starts_another(dask_env: DaskEnv) -> None:
    import signal

    from repeatr.distributed.worker import process_alive as alive
    from tests.distributed.cluster import command_line, descendants

    def run_on_w1(tag: str) -> GraphOutcome:
        # runc is offered by w1 alone: the steps go there.
        nodes = [step(f"s{n}", dask_env.base, f"mkdir -p /out && echo {tag} {n} > /out/x")
                 for n in range(2)]
        graph = Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))
        options = RunOptions(state=client_state(dask_env), executor="runc")
        return run_on_dask(dask_env, graph, options)[1]

    assert run_on_w1(uuid.uuid4().hex).exit_status == 0  # its server is up
    worker = dask_env.cluster.worker_pid("w1")
    servers = [p for p in descendants(worker) if "-I" in command_line(p)[1:3]]
    assert servers, [command_line(p) for p in descendants(worker)]
    for pid in servers:
        os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not any(alive(pid) for pid in servers))  # zombies until reaped

    outcome = run_on_w1(uuid.uuid4().hex)
    assert outcome.exit_status == 0, outcome.failed
