"""The library API a scheduler calls: load, prepare, plan and run_module, on both anyio backends."""

from __future__ import annotations

import json

import pytest

from repeatr.graph.model import GraphEvents, NodeState
from repeatr.module.run import exports_json, load, plan, prepare, run_module
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions
from tests.module.conftest import Scratch

pytestmark = pytest.mark.root

PRODUCT = "tar:77k8uXWaArTqvyecQmjW9Xb3q3yMM9Mih842dA3HrrDW4Xs8uvU9kfipMWJKLQ5quZ"


@pytest.mark.anyio
async def test_run_module_then_nothing_to_run(lib_scratch: Scratch) -> None:
    ws = lib_scratch.example("recursivemodule")
    prepared = prepare(load(ws))
    options = RunOptions(state=lib_scratch.state, executor="ns")
    states: list[tuple[str, NodeState]] = []
    events = GraphEvents(state=lambda name, state, _s: states.append((name, state)))
    outcome = await run_module(prepared, options, BatchOptions(jobs=2), events)
    assert outcome.exports == {"product": PRODUCT}
    assert exports_json(outcome.exports) == f'{{\n\t"product": "{PRODUCT}"\n}}'
    assert outcome.candidate == ws / ".timeless/candidates/default/unnamed/lineage.tl"
    assert json.loads(outcome.candidate.read_text())["releases"][0]["items"] == outcome.exports
    finals = {name: state for name, state in states}
    assert set(finals.values()) == {NodeState.DONE}
    assert len(finals) == 4

    assert {s.name: s.status for s in plan(prepared, options)} == {
        "step-first": "memoized",
        "submodule-jamboree": "module",
        "submodule-jamboree.bap": "memoized",
        "submodule-jamboree.boop": "memoized",
        "step-after": "memoized",
    }
    states.clear()
    again = await run_module(prepared, options, BatchOptions(jobs=2), events)
    assert again.exports == outcome.exports
    assert {state for _n, state in states if state is not NodeState.PENDING} <= {
        NodeState.MEMOIZED, NodeState.RUNNING,
    }
    assert NodeState.MEMOIZED in {state for _n, state in states}
