"""What the client takes from a worker's answer: only ware IDs at the node's own output paths.

A worker's answer crosses from another host. Its ``results`` become the
next node's inputs (on any worker), the module's exports and the client's
memo records: a result that is a ``mount:`` would give the next node's job
a host directory of whichever worker runs it. These tests hand the client
forged answers, as a worker running another repeatr (or a broken one)
could send, with no cluster: :meth:`DaskRun._settle` is where an answer
comes in.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from repeatr.distributed.client import DaskRun
from repeatr.distributed.task import Answer, Failure
from repeatr.errors import Category, RepeatrError
from repeatr.graph.model import Graph, GraphEvents, Node, NodeResult, Output, formula_file
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions

BASE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"
GOOD = "tar:9nR88GMd1Asq35kykq8bGgiJkrCkACXZmdg1JB7rvvAd4MTLoCuRtry5FbYpNay4zq"
TAR = {"packtype": "tar", "filters": None}


def _graph() -> Graph:
    a = Node("a", {"/": BASE}, {"exec": ["/bin/true"]}, {"/out": TAR})
    b = Node("b", {"/": BASE, "/in": Output("a", "/out")}, {"exec": ["/bin/true"]}, {})
    return Graph(nodes={"a": a, "b": b}, order=("a", "b"))


def _settle(tmp_path: Path, answer: Answer, warehouse: str = "") -> DaskRun:
    (tmp_path / "wh").mkdir(exist_ok=True)
    (tmp_path / "state").mkdir(exist_ok=True)
    run = DaskRun(_graph(), RunOptions(state=tmp_path / "state"), BatchOptions(jobs=1),
                  GraphEvents(), warehouse=warehouse or f"ca+file://{tmp_path / 'wh'}")
    anyio.run(run._settle, "a", answer, backend="asyncio")
    return run


def _record(results: dict[str, str]) -> bytes:
    import json

    return json.dumps({"exitCode": 0, "results": results}).encode()


@pytest.mark.parametrize(
    "results",
    [
        {"/out": "mount:rw:/"},  # a host dir for the next node's job
        {"/out": "tar:../../../../etc"},  # not a hash
        {"/out": GOOD, "/etc": GOOD},  # a path the node has no output at
        {"/out": "git:" + "0" * 40},  # not the packtype the node packs
    ],
)
@pytest.mark.parametrize("warehouse", ["", "ca+http://127.0.0.1:9/wh/"])
def test_a_forged_result_fails_the_node(
    tmp_path: Path, results: dict[str, str], warehouse: str
) -> None:
    """Nothing is connected to (port 9 is never asked): the answer is judged on its own."""
    forged = Answer("a", result=NodeResult("a", 0, results, _record(results)), worker="tcp://evil")
    run = _settle(tmp_path, forged, warehouse)
    assert "a" not in run.done
    error = run.failed["a"]
    assert isinstance(error, RepeatrError)
    assert error.category == Category.EXECUTOR
    assert "tcp://evil" in error.message
    assert run.skipped == {"b"}
    memo = tmp_path / "state" / "memo"
    assert not memo.exists() or not any(p.is_file() for p in memo.rglob("*"))


def test_a_good_result_is_taken(tmp_path: Path) -> None:
    results = {"/out": GOOD}
    answer = Answer("a", result=NodeResult("a", 0, results, _record(results)), worker="tcp://w1")
    run = _settle(tmp_path, answer)
    assert run.done["a"].results == results
    assert not run.failed


def test_an_unknown_failure_category_is_an_executor_error(tmp_path: Path) -> None:
    answer = Answer("a", failure=Failure(category=999, message="boom"), worker="tcp://evil")
    run = _settle(tmp_path, answer)
    error = run.failed["a"]
    assert isinstance(error, RepeatrError)
    assert error.category == Category.EXECUTOR
    assert "boom" in error.message


@pytest.mark.parametrize("ware", ["mount:rw:/", "mount:ro:/etc", "tar:../../x", "not a ware"])
def test_a_needed_nodes_result_must_be_a_ware_to_become_an_input(ware: str) -> None:
    """Worker to worker: Dask hands node b the answer of node a directly, not through the
    client's check, and b's formula is filled in from it (``formula_file``), on b's worker.
    A result that is not a ware ID must never become b's input (a mount of b's host)."""
    graph = _graph()
    done = {"a": NodeResult("a", 0, {"/out": ware}, b"{}")}
    with pytest.raises(RepeatrError, match="'/out'") as info:
        formula_file(graph.nodes["b"], done)
    assert info.value.category == Category.EXECUTOR


def test_a_record_that_says_other_results_than_the_answer_fails_the_node(tmp_path: Path) -> None:
    """The record is what the client's memo store keeps and later answers from: its results
    must be the answer's (already checked), not others smuggled past the check."""
    results = {"/out": GOOD}
    forged = Answer("a", result=NodeResult("a", 0, results, _record({"/out": "mount:rw:/"})),
                    worker="tcp://evil")
    run = _settle(tmp_path, forged)
    assert "a" not in run.done
    assert isinstance(run.failed["a"], RepeatrError)
    memo = tmp_path / "state" / "memo"
    assert not memo.exists() or not any(p.is_file() for p in memo.rglob("*"))
