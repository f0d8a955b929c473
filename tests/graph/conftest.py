"""Fixtures for running graphs: the busybox ware, nodes that read each other, a host guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from repeatr.cache import Cache
from repeatr.graph.model import Graph, GraphEvents, Input, Node, NodeState, Output
from repeatr.runner.run import RunOptions
from tests.executors.conftest import our_cgroups
from tests.rootfs import foreign_mount, mountinfo, netns_list, remove_tree
from tests.run.conftest import Busybox, busybox  # noqa: F401 (a fixture)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Kit:
    """Nodes on the busybox rootfs whose outputs go to a warehouse the next nodes fetch from."""

    def __init__(self, rootfs: Busybox, base: Path) -> None:
        self.busybox = rootfs
        self.state = base / "state"
        self.warehouse = f"ca+file://{base / 'warehouse'}/"
        (base / "warehouse").mkdir()
        self.options = RunOptions(state=self.state, executor="ns")

    def node(
        self,
        name: str,
        script: str,
        *,
        reads: dict[str, Output] | None = None,
        outputs: tuple[str, ...] = (),
    ) -> Node:
        """A step running ``sh -c script``; ``reads``: mount path -> another step's output."""
        inputs: dict[str, Input] = {"/": self.busybox.ware, **(reads or {})}
        return Node(
            name=name,
            inputs=inputs,
            action={"exec": ["/bin/sh", "-c", script]},
            outputs={path: {"packtype": "tar"} for path in outputs},
            fetch_urls={
                path: (self.busybox.warehouse if path == "/" else self.warehouse,)
                for path in inputs
            },
            save_urls={path: self.warehouse for path in outputs},
            origin=f"test graph: step {name!r}",
        )

    def work_dirs(self) -> list[str]:
        runs = self.state / "runs"
        return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def graph_of(*nodes: Node) -> Graph:
    """A graph of ``nodes``, in the order given (each after what it reads)."""
    return Graph(nodes={n.name: n for n in nodes}, order=tuple(n.name for n in nodes))


@dataclass
class Recorder:
    """Every event of a graph run, in order."""

    states: list[tuple[str, NodeState, float]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[str, list[bytes]] = field(default_factory=dict)

    def events(self) -> GraphEvents:
        return GraphEvents(
            state=lambda n, s, t: self.states.append((n, s, t)),
            record=lambda n, r: self.records.__setitem__(n, json.loads(r)),
            output=lambda n, _s, line: self.lines.setdefault(n, []).append(line),
        )

    def of(self, name: str) -> list[NodeState]:
        return [s for n, s, _t in self.states if n == name]

    def index(self, name: str, state: NodeState) -> int:
        return next(i for i, (n, s, _t) in enumerate(self.states) if n == name and s is state)


@pytest.fixture
def kit(busybox: Busybox) -> Iterator[Kit]:  # noqa: F811 (the fixture imported above)
    """A fresh state dir and warehouse on the tmpfs; the host checked afterwards."""
    base = busybox.area.new_workdir()
    before = mountinfo()
    netns = netns_list()
    made = Kit(busybox, base)
    yield made
    new = [line for line in mountinfo() if line not in before]
    assert not [line for line in new if not foreign_mount(line, busybox.area)], "mounts leaked"
    assert netns_list() == netns
    assert our_cgroups() == [], "cgroup dirs left behind"
    assert made.work_dirs() == [], "work dirs left behind"
    if made.state.exists():
        assert Cache(made.state).layout.list_temps() == [], "cache temps left behind"
    remove_tree(base)
