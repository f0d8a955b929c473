"""A graph of formulas: what a module (or a batch) becomes before it runs.

A :class:`Graph` is a flat set of :class:`Node`\\s, each one formula whose
inputs are either pinned ware IDs or an :class:`Output` of another node. A
node can run once every node it reads from has run and exited 0; its formula
file (:func:`formula_file`) is then filled in from their results. Nested
modules are flattened when the graph is built (their steps become nodes named
``sub.step``), so whoever runs a graph needs no module knowledge at all: the
local runner (``repeatr.graph.local``) and the Dask one
(``repeatr.distributed``) take the same graph.

Everything here is plain, frozen data: a node crosses to a Dask worker by
pickle and is rebuilt there unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from repeatr.errors import ExecutorError, RepeatrError, UsageError
from repeatr.model.wareid import WareID

if TYPE_CHECKING:
    from repeatr.runner.batch import BatchOptions


@dataclass(frozen=True)
class Output:
    """The ware another node's job left at one of its output paths."""

    node: str
    #: The output's path in that node's formula (a key of its run record's results).
    path: str


#: What an input is: a pinned ware ID (``tar:…``), or another node's output.
Input = str | Output


@dataclass(frozen=True)
class Node:
    """One formula of a graph, its inputs maybe still to be filled in."""

    #: Unique in the graph; a nested module's steps are ``sub.step``.
    name: str
    #: Input path -> ware.
    inputs: Mapping[str, Input]
    #: The formula's ``action`` as written (the original copies it unchanged).
    action: Mapping[str, Any]
    #: Output path -> its spec (``{"packtype": "tar", "filters": …}``).
    outputs: Mapping[str, Mapping[str, Any]]
    #: The formula file's ``context`` (``fetchUrls``, ``saveUrls``), by path.
    fetch_urls: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    save_urls: Mapping[str, str] = field(default_factory=dict)
    #: Where it was written, for messages: ``module.tl: step "build"``.
    origin: str = ""

    @property
    def needs(self) -> frozenset[str]:
        """The nodes whose outputs this one reads."""
        return frozenset(i.node for i in self.inputs.values() if isinstance(i, Output))


@dataclass(frozen=True)
class NodeResult:
    """What running one node gave."""

    name: str
    exit_code: int
    #: Output path -> ware ID (the run record's ``results``).
    results: Mapping[str, str]
    #: The run record, as printed.
    record_json: bytes
    memo_hit: bool = False

    @classmethod
    def of_record(
        cls, name: str, record_json: bytes, exit_code: int = 0, memo_hit: bool = False
    ) -> NodeResult:
        """The result of a node whose run printed ``record_json`` (a memo hit's: exit 0)."""
        record = json.loads(record_json)
        return cls(name, exit_code, dict(record.get("results") or {}), record_json, memo_hit)


@dataclass(frozen=True)
class Graph:
    """Nodes by name, and the order the original would have run them in."""

    nodes: Mapping[str, Node]
    #: Every node once, each after the nodes it needs (what ``plan`` prints).
    order: tuple[str, ...]

    def __post_init__(self) -> None:
        if sorted(self.order) != sorted(self.nodes):
            raise UsageError("graph order must name every node exactly once")
        seen: set[str] = set()
        for name in self.order:
            node = self.nodes[name]
            if missing := node.needs - self.nodes.keys():
                raise UsageError(f"{node.origin or name}: reads unknown step(s) {sorted(missing)}")
            if later := node.needs - seen:
                raise UsageError(f"graph order puts {name!r} before {sorted(later)}")
            seen.add(name)

    def dependents(self, name: str) -> list[str]:
        """Every node that reads ``name``'s outputs, directly or not, in order."""
        tainted = {name}
        for other in self.order:
            if self.nodes[other].needs & tainted:
                tainted.add(other)
        tainted.discard(name)
        return [n for n in self.order if n in tainted]


def formula_file(node: Node, done: Mapping[str, NodeResult]) -> bytes:
    """The formula file (``{"formula", "context"}``) of ``node``, its inputs pinned.

    ``done`` holds the results of (at least) every node it needs, each having
    exited 0. Raises ``UsageError`` naming the node and the output when a
    needed output is not among them.
    """
    inputs: dict[str, str] = {}
    for path, ware in node.inputs.items():
        if isinstance(ware, str):
            inputs[path] = ware
            continue
        results = done[ware.node].results
        if ware.path not in results:
            raise UsageError(
                f"{node.origin or node.name}: step {ware.node!r} has no output {ware.path!r}"
            )
        given = results[ware.path]
        try:
            WareID.parse(given)
        except UsageError as exc:
            # On Dask the result comes from another worker, straight: never a mount: here.
            raise ExecutorError(
                f"{node.origin or node.name}: step {ware.node!r} gave {given!r} at"
                f" {ware.path!r}, not a ware ID ({exc.message})"
            ) from exc
        inputs[path] = given
    formula = {"inputs": inputs, "action": dict(node.action), "outputs": dict(node.outputs)}
    context = {
        "fetchUrls": {p: list(u) for p, u in node.fetch_urls.items()},
        "saveUrls": dict(node.save_urls),
    }
    return json.dumps({"formula": formula, "context": context}, indent="\t").encode()


class NodeState(StrEnum):
    """Where a node is; every node goes PENDING -> RUNNING -> one of the others."""

    PENDING = "pending"
    RUNNING = "running"
    #: Answered by the memo store: nothing ran.
    MEMOIZED = "memoized"
    DONE = "done"
    #: Its job exited non-zero, or an error stopped it (``GraphOutcome.failed``).
    FAILED = "failed"
    #: Never started: a node it needs failed, or the graph was cancelled.
    SKIPPED = "skipped"


@dataclass
class GraphEvents:
    """Where a graph run reports; every callback may be left out."""

    #: A node changed state; ``seconds``: since it started running (0 before).
    state: Callable[[str, NodeState, float], None] = lambda _n, _s, _t: None
    #: A node's run record, as soon as it is known.
    record: Callable[[str, bytes], None] = lambda _n, _r: None
    #: A line of a node's job output (``stdout`` / ``stderr``).
    output: Callable[[str, str, bytes], None] = lambda _n, _s, _l: None
    log: Callable[[str], None] = lambda _m: None


@dataclass(frozen=True)
class GraphOutcome:
    """What running a graph gave, node by node."""

    #: Nodes that ran (or were memoized) and exited 0.
    done: Mapping[str, NodeResult]
    #: Nodes whose job exited non-zero (a NodeResult) or that an error stopped.
    failed: Mapping[str, NodeResult | RepeatrError]
    #: Nodes never started (a node they need failed; cancelled by ``fail_fast``).
    skipped: tuple[str, ...]
    #: The exit status, as ``repeatr.runner.batch.most_severe`` ranks the nodes'.
    exit_status: int

    @classmethod
    def settle(
        cls,
        graph: Graph,
        done: Mapping[str, NodeResult],
        failed: Mapping[str, NodeResult | RepeatrError],
        skipped: Collection[str],
        *,
        ignore_job_exit: bool = False,
    ) -> GraphOutcome:
        """The outcome of a graph run (local or Dask), its exit status ranked
        as a batch's (``repeatr.runner.batch.most_severe``)."""
        from repeatr.errors import Category
        from repeatr.runner.batch import most_severe

        codes = []
        for what in failed.values():
            if isinstance(what, RepeatrError):
                codes.append(what.exit_code)
            elif not ignore_job_exit:
                codes.append(int(Category.JOB_FAILED))
        return cls(
            done=dict(done),
            failed=dict(failed),
            skipped=tuple(n for n in graph.order if n in skipped),
            exit_status=most_severe(codes),
        )


class NodeTally:
    """What a graph runner (local or Dask) knows of its nodes so far; ``outcome`` sums it up."""

    graph: Graph
    batch: BatchOptions
    done: dict[str, NodeResult]
    failed: dict[str, NodeResult | RepeatrError]
    skipped: set[str]

    def outcome(self) -> GraphOutcome:
        return GraphOutcome.settle(
            self.graph,
            self.done,
            self.failed,
            self.skipped,
            ignore_job_exit=self.batch.ignore_job_exit,
        )
