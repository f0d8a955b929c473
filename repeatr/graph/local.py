"""Running a graph on this host: every node as soon as the nodes it needs are done.

``run_graph`` runs each node of a :class:`repeatr.graph.model.Graph` through
the engine's batch path (:mod:`repeatr.runner.batch`): one task group, at
most ``BatchOptions.jobs`` jobs at once (a few more nodes being prepared
beside them: ``repeatr.runner.batch.in_flight``), one
:class:`repeatr.cache.shared.SharedCache` and one
:class:`repeatr.executors.server.SandboxServer` for the whole graph. A node
is ready the moment the last node it needs has exited 0 (no waves: a slow
node holds back only what reads it), that is when its record is final
(``RunnerEvents.settled``: outputs saved, record stored), before its run's
teardown, which goes on beside the readers; ready nodes start in the
graph's order while there is room. The outputs that other nodes read are
put into the cache as they are packed (``keep_outputs``): a reader's input
is a shelf already. Its formula file is filled in from
their results (:func:`repeatr.graph.model.formula_file`) and given to
:func:`repeatr.runner.run.run` as bytes (no temp file), so it is memoized
like any ``repeatr run`` of a file with those bytes.

A node fails when its job exits non-zero or an error stops it (a ware not
found, a needed output missing); the nodes that read it, directly or not,
are skipped, and the others go on. With ``BatchOptions.fail_fast`` the
first failure cancels the running nodes too (they count as skipped).
Cancelling ``run_graph`` itself (Ctrl-C, SIGTERM, a cancel scope) cancels
every node, each tearing down what it took, and raises the cancellation.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import msgspec

from repeatr.errors import RepeatrError, collapse
from repeatr.graph.model import (
    Graph,
    GraphEvents,
    GraphOutcome,
    NodeResult,
    NodeState,
    NodeTally,
    Output,
    formula_file,
)
from repeatr.runner.batch import BatchOptions, in_flight
from repeatr.runner.run import (
    ExecutorChooser,
    RunnerEvents,
    RunOptions,
    RunResult,
    net_settings,
    run,
)

if TYPE_CHECKING:
    import anyio.abc

    from repeatr.cache.shared import SharedCache
    from repeatr.executors.server import SandboxServer


async def run_graph(
    graph: Graph,
    options: RunOptions,
    batch: BatchOptions,
    events: GraphEvents,
    *,
    cache: SharedCache | None = None,
    server: SandboxServer | None = None,
) -> GraphOutcome:
    """Run every node of ``graph`` (see the module docstring).

    ``cache``: the shared cache to use (it must be open); None: one on
    ``options.state`` for this graph. ``server``: the sandbox server every
    job's helper is forked from; None: one for this graph (started by its
    first node the memo store does not answer). A node's failure is in the
    outcome, never raised; cancellation is raised.
    """
    from repeatr.cache.shared import SharedCache
    from repeatr.executors.server import SandboxServer

    scheduler = _Scheduler(graph, options, batch, events)
    for name in graph.order:
        events.state(name, NodeState.PENDING, 0.0)
    try:
        async with AsyncExitStack() as stack:
            if cache is None:
                own = SharedCache(options.state, on_wait=events.log, ware_disk=options.ware_disk)
                cache = await stack.enter_async_context(own)
            if options.collect_dead:
                # As a batch does: once per graph, not once per node.
                from repeatr.supervisor import RunEvents, collect_dead_runs

                net = net_settings(options.bridge, options.subnet)
                await collect_dead_runs(cache.root, net, RunEvents(log=events.log))
                scheduler.options = msgspec.structs.replace(options, collect_dead=False)
            if server is None:
                server = await stack.enter_async_context(SandboxServer())
            server.limit_jobs(batch.jobs)
            await scheduler.run_all(cache, server)
    finally:
        # Cancelled (by fail_fast, or the whole graph), running or not yet
        # started: every node ends in a final state, whatever happened.
        scheduler.skip_unsettled()
    return scheduler.outcome()


@dataclass
class _Scheduler(NodeTally):
    """Which node may start, and what each gave (one per ``run_graph`` call).

    Everything here runs in the event loop's thread, between awaits: no locks.
    Nodes start from a queue of ready ones, in the graph's order, while fewer
    than ``in_flight(batch.jobs)`` run (not from tasks racing for a limiter,
    whose order a backend may shuffle: trio does); their jobs are bounded to
    ``batch.jobs`` by the sandbox server, which gives the places in the
    order the nodes started (each node's turn, ``JOB_TURN``), as a batch's. ``-j 1`` runs one
    node at a time, in the original's order.
    """

    graph: Graph
    options: RunOptions
    batch: BatchOptions
    events: GraphEvents
    done: dict[str, NodeResult] = field(default_factory=dict)
    failed: dict[str, NodeResult | RepeatrError] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    #: Node -> how many of the nodes it needs have not exited 0 yet.
    waiting_on: dict[str, int] = field(default_factory=dict)
    #: Node -> the nodes that read it directly.
    readers: dict[str, list[str]] = field(default_factory=dict)
    #: Nodes whose needs are all done, not started yet: (place in the order, name).
    ready: list[tuple[int, str]] = field(default_factory=list)
    #: Node -> its place in the graph's order.
    place: dict[str, int] = field(default_factory=dict)
    #: Node -> its output paths that other nodes read: put into the cache as
    #: they are packed, so a reader's input is a shelf already (no fetch, no unpack).
    read_outputs: dict[str, frozenset[str]] = field(default_factory=dict)
    running: int = 0
    #: Nodes started so far: the next one's turn for a job's place (``JOB_TURN``).
    turns: int = 0
    #: Set when ``fail_fast`` cancelled the nodes still running.
    cut_short: bool = False
    #: The executor is chosen once per kind of job, not once per node.
    chooser: ExecutorChooser = field(default_factory=ExecutorChooser)

    def __post_init__(self) -> None:
        for place, name in enumerate(self.graph.order):
            needs = self.graph.nodes[name].needs
            self.waiting_on[name] = len(needs)
            self.readers.setdefault(name, [])
            for need in needs:
                self.readers.setdefault(need, []).append(name)
            if not needs:
                self.ready.append((place, name))  # in order: already a heap
            self.place[name] = place
        read: dict[str, set[str]] = {}
        for node in self.graph.nodes.values():
            for source in node.inputs.values():
                if isinstance(source, Output):
                    read.setdefault(source.node, set()).add(source.path)
        self.read_outputs = {name: frozenset(paths) for name, paths in read.items()}

    async def run_all(self, cache: SharedCache, server: SandboxServer) -> None:
        async with anyio.create_task_group() as tg:
            self._start_ready(tg, cache, server)
        self.skip_unsettled()  # fail_fast cancelled them

    def skip_unsettled(self) -> None:
        """Every node not done, failed or skipped yet: skipped (it was cancelled)."""
        settled = self.done.keys() | self.failed.keys() | self.skipped
        for name in self.graph.order:
            if name not in settled:
                self._skip(name)

    def _start_ready(
        self, tg: anyio.abc.TaskGroup, cache: SharedCache, server: SandboxServer
    ) -> None:
        """Start ready nodes, earliest in the graph's order first, while there is room."""
        while self.ready and self.running < in_flight(self.batch.jobs):
            if tg.cancel_scope.cancel_called:
                return
            _, name = heapq.heappop(self.ready)
            self.running += 1
            # Running from now: its task starts on the loop's next turn.
            self.events.state(name, NodeState.RUNNING, 0.0)
            self.turns += 1
            tg.start_soon(self._node, name, self.turns - 1, tg, cache, server, name=name)

    async def _node(
        self,
        name: str,
        turn: int,
        tg: anyio.abc.TaskGroup,
        cache: SharedCache,
        server: SandboxServer,
    ) -> None:
        started = time.monotonic()
        holds_a_place = True

        def release() -> None:
            """The node's place among the ``jobs`` running: given back once."""
            nonlocal holds_a_place
            if holds_a_place:
                holds_a_place = False
                self.running -= 1

        def settled(result: RunResult) -> None:
            # The record is final (the run's teardown goes on): the readers may start.
            if result.exit_code == 0 and name not in self.done:
                self._succeeded(name, result, time.monotonic() - started)
                release()
                self._start_ready(tg, cache, server)

        try:
            with server.turn(turn):  # job places go to the nodes in the order started
                await self._run_node(name, started, tg, cache, server, settled)
        finally:
            release()
        self._start_ready(tg, cache, server)

    async def _run_node(
        self,
        name: str,
        started: float,
        tg: anyio.abc.TaskGroup,
        cache: SharedCache,
        server: SandboxServer,
        settled: Callable[[RunResult], None],
    ) -> None:
        try:
            try:
                data = formula_file(self.graph.nodes[name], self.done)
                result = await run(
                    self._display(name),
                    self.options,
                    self._runner_events(name, settled),
                    cache=cache,
                    server=server,
                    data=data,
                    chooser=self.chooser,
                    keep_outputs=self.read_outputs.get(name, frozenset()),
                )
            except BaseExceptionGroup as group:
                raise collapse(group) from None
        except RepeatrError as err:
            if name in self.done:
                # Its record was final, its outputs saved: only the teardown failed.
                self.events.log(f"{name}: after its record: {err}")
                return
            self._failed(name, err, time.monotonic() - started, tg)
            return
        if name in self.done:
            return  # settled already (run reports every success before returning)
        seconds = time.monotonic() - started
        if result.exit_code != 0:
            self._failed(name, _node_result(name, result), seconds, tg)
            return
        self._succeeded(name, result, seconds)

    def _succeeded(self, name: str, result: RunResult, seconds: float) -> None:
        """``name`` exited 0: done, and each reader whose needs are all done is ready."""
        self.done[name] = _node_result(name, result)
        state = NodeState.MEMOIZED if result.memo_hit else NodeState.DONE
        self.events.state(name, state, seconds)
        for reader in self.readers[name]:
            self.waiting_on[reader] -= 1
            if not self.waiting_on[reader] and reader not in self.skipped:
                heapq.heappush(self.ready, (self.place[reader], reader))

    def _display(self, name: str) -> str:
        """How messages name the node's formula: where it was written, else its name."""
        node = self.graph.nodes[name]
        return node.origin or f"step {name!r}"

    def _runner_events(self, name: str, settled: Callable[[RunResult], None]) -> RunnerEvents:
        ev = self.events

        def log(message: str) -> None:
            ev.log(f"{name}: {message}")

        return RunnerEvents(
            log=log,
            warn=log,
            output=lambda stream, line: ev.output(name, stream, line),
            record=lambda record_json: ev.record(name, record_json),
            settled=settled,
        )

    def _failed(
        self,
        name: str,
        what: NodeResult | RepeatrError,
        seconds: float,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        self.failed[name] = what
        self.events.state(name, NodeState.FAILED, seconds)
        for dependent in self.graph.dependents(name):
            if dependent not in self.skipped:
                self._skip(dependent)
        if self.batch.fail_fast and not self.cut_short:
            self.cut_short = True
            tg.cancel_scope.cancel()

    def _skip(self, name: str) -> None:
        self.skipped.add(name)
        self.events.state(name, NodeState.SKIPPED, 0.0)


def _node_result(name: str, result: RunResult) -> NodeResult:
    return NodeResult.of_record(name, result.record_json, result.exit_code, result.memo_hit)
