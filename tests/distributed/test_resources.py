"""Which worker resources a node asks for, what no worker offers; the runner's loop (no cluster)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from repeatr.distributed import resources
from repeatr.distributed.client import DaskRun
from repeatr.errors import UsageError
from repeatr.graph.model import Graph, GraphEvents, Node
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunOptions


def node(**action: object) -> Node:
    return Node("n", {"/": "tar:x"}, {"exec": ["true"], **action}, {})


def test_auto_asks_only_for_a_repeatr_worker() -> None:
    assert resources.needed(node(), "auto") == {"repeatr": 1.0}


def test_a_named_executor_and_a_network_are_asked_for() -> None:
    wants = resources.needed(node(network="bridge"), "runc")
    assert wants == {"repeatr": 1.0, "executor-runc": 1.0, "network-bridge": 1.0}


def test_offers_are_plenty_of_each_name() -> None:
    offer = resources.offered(["ns", "chroot"], ["none", "host", "bridge"])
    assert set(offer) == {
        "repeatr", "executor-ns", "executor-chroot", "network-none", "network-host",
        "network-bridge",
    }
    assert set(offer.values()) == {resources.PLENTY}


def test_missing_names_what_the_closest_worker_lacks() -> None:
    wants = resources.needed(node(network="bridge"), "runc")
    plain = {"some-gpu": 1.0}
    close = resources.offered(["runc"], ["none"])
    assert resources.missing(wants, [plain, close]) == ["network-bridge"]
    assert resources.missing(wants, [plain, close, resources.offered(["runc"], ["bridge"])]) == []
    assert resources.missing(wants, []) == sorted(wants)


def test_the_dask_runner_says_it_needs_asyncio(tmp_path: Path) -> None:
    graph = Graph({"n": node()}, ("n",))
    run = DaskRun(graph, RunOptions(state=tmp_path), BatchOptions(jobs=1), GraphEvents(),
                  warehouse="ca+file:///nowhere/")
    with pytest.raises(UsageError, match="asyncio"):
        anyio.run(run.run, "tcp://127.0.0.1:1", backend="trio")
