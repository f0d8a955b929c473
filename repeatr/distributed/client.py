"""The client side: a graph run on a Dask cluster, reported like a local run.

:func:`run_graph_dask` takes the graph the local runner takes
(:mod:`repeatr.graph.model`) and gives the same :class:`GraphOutcome`,
reporting the same :class:`GraphEvents`. In order:

1. Every node's inputs are fetched from ``warehouse`` (then from the node's
   own fetch URLs) and its outputs saved there, so the worker running the
   next node can fetch them (:func:`with_warehouse`). Before a node is
   submitted, the client copies its pinned inputs into the warehouse from
   the node's own fetch URLs, which only the client may reach (``_publish``).
2. **Memo, on the client.** Walking the graph in order, a node whose needed
   nodes are all answered already has a formula file the client can build;
   if the client's memo store (``options.state``) holds a record for that
   exact file (its bytes, so the warehouse URL is part of the key) and
   executor, the node is answered there (``MEMOIZED``) and never submitted.
   A re-run of a graph that ran before is thus answered entirely on the
   client: nothing is sent to the cluster. A node downstream of one that
   runs cannot be looked up before it is submitted (its inputs are not
   known yet); the worker that runs it asks its own memo store first, as
   ``repeatr run`` does. Every success is stored in the client's memo
   store, under the keys a ``repeatr run`` of that file would use.
3. Every other node becomes one task (``client.submit`` of
   :func:`repeatr.distributed.task.run_node`), with the futures of the nodes
   it needs as arguments, so Dask knows the dependencies, and the worker
   resources it needs (:mod:`repeatr.distributed.resources`). A node no
   worker of the cluster can run (no worker offers its executor or network)
   fails at once with an executor error naming what is missing.
4. Workers report (Dask's event log, one topic per run) when a node starts,
   its job's output lines and the runner's messages; the answers bring the
   records. A job that exits non-zero is a result, never retried; Dask runs
   a task again elsewhere only when its worker dies (the scheduler's
   ``allowed-failures``, 3 by default: then it fails as an executor error).
5. A failed node skips the nodes that read it; ``fail_fast`` cancels the
   rest (queued tasks are cancelled, running jobs are cancelled on their
   workers). Cancelling the run (Ctrl-C) does the same and re-raises.

The client runs on asyncio (Dask's client is asyncio code).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import msgspec

from repeatr.distributed import require, resources
from repeatr.distributed.task import Answer, Settings, run_node
from repeatr.errors import Category, ExecutorError, RepeatrError, UsageError
from repeatr.graph.model import (
    Graph,
    GraphEvents,
    GraphOutcome,
    Node,
    NodeResult,
    NodeState,
    NodeTally,
    formula_file,
)
from repeatr.memo import MemoStore, bytes_key
from repeatr.runner.batch import BatchOptions
from repeatr.runner.run import RunnerEvents, RunOptions

if TYPE_CHECKING:
    from distributed import Client, Future

#: Warehouse kinds that hold many wares (``--warehouse``).
WAREHOUSE_SCHEMES = ("ca+file", "ca+http", "ca+https")
#: How long the client waits for the scheduler to answer when connecting.
CONNECT_TIMEOUT = 10.0
#: How long an answer waits for its node's events still on the way.
EVENTS_GRACE = 2.0


def check_warehouse(url: str) -> None:
    """UsageError unless ``url`` names a warehouse of many wares that repeatr speaks."""
    from urllib.parse import urlsplit

    from repeatr.warehouse import warehouse_for

    scheme = urlsplit(url).scheme
    if scheme not in WAREHOUSE_SCHEMES:
        raise UsageError(
            f"--warehouse {url!r}: a Dask run needs a content-addressed warehouse"
            " every worker can read and write",
            hint=f"one of {', '.join(s + '://' for s in WAREHOUSE_SCHEMES)}",
        )
    warehouse_for(url)  # the path or host is checked there


def check_tls(scheduler: str) -> None:
    """UsageError for a ``tls://`` scheduler when Dask's TLS settings give no client context."""
    if not scheduler.startswith("tls://"):
        return
    from distributed.security import Security

    security: Any = Security()  # type: ignore[no-untyped-call]
    if security.get_connection_args("client").get("ssl_context") is None:
        raise UsageError(
            f"--dask {scheduler}: a tls:// scheduler needs Dask's TLS settings for the client"
            " (a CA, a certificate and its key)",
            hint="set distributed.comm.tls.ca-file, .client.cert and .client.key in Dask's"
            " configuration (or DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT,"
            " ..._CLIENT__KEY); see docs/distributed.md",
        )


def with_warehouse(node: Node, warehouse: str) -> Node:
    """``node`` fetching every input from ``warehouse`` first and saving every output there."""
    fetch: dict[str, tuple[str, ...]] = {}
    for path, ware in node.inputs.items():
        if isinstance(ware, str) and ware.startswith("mount:"):
            continue
        own = tuple(u for u in node.fetch_urls.get(path, ()) if u != warehouse)
        fetch[path] = (warehouse, *own)
    return replace(node, fetch_urls=fetch, save_urls=dict.fromkeys(node.outputs, warehouse))


def result_problem(node: Node, result: NodeResult) -> str | None:
    """What is wrong with a worker's ``result`` for ``node``, or None.

    A worker is another host: what it answers becomes the next nodes'
    inputs (on any worker), the exports and the client's memo records. So
    a success must name, at the node's own output paths only, ware IDs of
    the packtype each output is packed as: never a ``mount:`` (a host
    directory of whichever worker runs the next node) nor a malformed ID.
    The wares themselves are checked against their IDs when fetched. The
    record must say the same results (the memo store keeps the record).
    """
    from repeatr.model.wareid import WareID

    if result.exit_code != 0:
        return None
    for path, ware in result.results.items():
        spec = node.outputs.get(path)
        if spec is None:
            return f"a result at {path!r}, where the node has no output"
        try:
            parsed = WareID.parse(ware)
        except UsageError as exc:
            return f"{ware!r} at {path!r}: {exc.message}"
        packtype = spec.get("packtype", "tar")
        if parsed.packtype != packtype:
            return f"{ware!r} at {path!r}, which is packed as {packtype!r}"
    # The record is what the memo store keeps and answers from later.
    try:
        record = json.loads(result.record_json)
    except ValueError:
        return "a run record that is not JSON"
    if not isinstance(record, dict) or (record.get("results") or {}) != dict(result.results):
        return "a run record whose results are not the answer's"
    return None


async def run_graph_dask(
    graph: Graph,
    options: RunOptions,
    batch: BatchOptions,
    events: GraphEvents,
    *,
    scheduler: str,
    warehouse: str,
) -> GraphOutcome:
    """Run every node of ``graph`` on the Dask cluster at ``scheduler`` (see the module doc).

    ``options``: the client's state (its memo store), the executor asked
    for, ``use_memo``; the workers use their own state and host settings.
    ``batch.jobs`` is not used: the workers' threads say how many run at
    once. A node's failure is in the outcome, never raised; an unreachable
    scheduler raises ``ExecutorError``, cancellation is raised.
    """
    run = DaskRun(graph, options, batch, events, warehouse=warehouse)
    await run.run(scheduler)
    return run.outcome()


@dataclass
class DaskRun(NodeTally):
    """One graph on one cluster: what each node gave, and where it ran."""

    graph: Graph
    options: RunOptions
    batch: BatchOptions
    events: GraphEvents
    warehouse: str
    #: The run's event topic and the prefix of its task keys.
    topic: str = field(default_factory=lambda: f"repeatr-{uuid.uuid4().hex[:16]}")
    done: dict[str, NodeResult] = field(default_factory=dict)
    failed: dict[str, NodeResult | RepeatrError] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    #: Node -> the worker that ran it (the last, if Dask ran it again after a worker died).
    workers: dict[str, str] = field(default_factory=dict)
    #: Nodes submitted to the cluster (the others were answered on the client).
    submitted: list[str] = field(default_factory=list)
    #: The dashboard's address, if the scheduler serves one.
    dashboard: str | None = None
    #: Seconds answers waited for their nodes' events (they usually come first).
    events_waited: float = 0.0
    #: Nodes a worker said it started, and those reported RUNNING.
    _running: set[str] = field(default_factory=set)
    _reported: set[str] = field(default_factory=set)
    _received: dict[str, int] = field(default_factory=dict)
    _nodes: dict[str, Node] = field(default_factory=dict)
    _futures: dict[str, Future[Answer]] = field(default_factory=dict)
    #: Node -> (how many events its answer said were sent, set when they all arrived).
    _expected: dict[str, tuple[int, anyio.Event]] = field(default_factory=dict)
    _cut_short: bool = False
    #: Pinned wares the warehouse is known to have.
    _published: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        check_warehouse(self.warehouse)
        self._nodes = {n: with_warehouse(self.graph.nodes[n], self.warehouse)
                       for n in self.graph.order}

    @property
    def settled(self) -> set[str]:
        return self.done.keys() | self.failed.keys() | self.skipped

    async def run(self, scheduler: str) -> None:
        """Connect, answer what the memo store can, submit the rest, wait for every node."""
        require()
        import sniffio
        from distributed import Client

        if sniffio.current_async_library() != "asyncio":
            raise UsageError("the Dask client runs on asyncio (anyio.run(..., backend='asyncio'))")

        if not self.graph.order:
            return  # nothing to run (a batch of files that could not be read)
        check_tls(scheduler)
        for name in self.graph.order:
            self.events.state(name, NodeState.PENDING, 0.0)
        try:
            client = await Client(  # type: ignore[no-untyped-call]
                scheduler, asynchronous=True, timeout=CONNECT_TIMEOUT, set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"cannot reach the Dask scheduler {scheduler}: {exc}",
                hint="start one with `dask scheduler`, or check --dask / REPEATR_DASK",
            ) from exc
        async with client:
            client.subscribe_topic(self.topic, self._on_event)
            try:
                await self._run(client)
            finally:
                client.unsubscribe_topic(self.topic)

    async def _run(self, client: Client) -> None:
        rpc: Any = client.scheduler
        identity = await rpc.identity(n_workers=-1)
        offers = [dict(w.get("resources") or {}) for w in identity.get("workers", {}).values()]
        address = str(rpc.address)
        port = (identity.get("services") or {}).get("dashboard")
        if port:
            host = address.split("://", 1)[-1].rsplit(":", 1)[0]
            self.dashboard = f"http://{host}:{port}/status"
            self.events.log(f"Dask dashboard: {self.dashboard}")
        self.events.log(f"Dask scheduler {address}: {len(offers)} workers,"
                        f" {sum(1 for o in offers if resources.REPEATR in o)} with repeatr")
        settings = Settings(self.options.executor, self.options.use_memo, self.topic)
        try:
            for name in self.graph.order:
                if self._cut_short:
                    break
                await self._answer_or_submit(client, name, settings, offers)
            await self._collect(client)
        except BaseException:  # cancelled (Ctrl-C): nothing of this run may go on
            await self._stop(client)
            raise

    async def _answer_or_submit(
        self,
        client: Client,
        name: str,
        settings: Settings,
        offers: list[dict[str, float]],
    ) -> None:
        node = self._nodes[name]
        if node.needs & self.settled - self.done.keys():
            self._skip(name)
            return
        if mounts := sorted(p for p, w in node.inputs.items()
                            if isinstance(w, str) and w.startswith("mount:")):
            self._fail(name, UsageError(
                f"{node.origin or name}: {', '.join(mounts)}: a host directory (mount:)"
                " cannot be an input on a Dask worker"))
            return
        if node.needs <= self.done.keys():
            try:
                hit = await self._memo_hit(name)
            except RepeatrError as error:  # it reads an output a needed step does not have
                self._fail(name, error)
                return
            if hit is not None:
                self.done[name] = hit
                self.events.record(name, hit.record_json)
                self.events.state(name, NodeState.MEMOIZED, 0.0)
                return
        wants = resources.needed(node, self.options.executor)
        if lacking := resources.missing(wants, offers):
            self._fail(name, ExecutorError(
                f"{node.origin or name}: no worker of the Dask cluster offers"
                f" {', '.join(lacking)}",
                hint="start workers with `--preload repeatr.distributed` on hosts that have it"
                " (repeatr doctor there says what is missing)"))
            return
        try:
            await self._publish(name)
        except RepeatrError as error:
            self._fail(name, error)
            return
        args: list[Any] = []
        for need in sorted(node.needs):
            if need in self._futures:
                args.append(self._futures[need])
            else:  # answered on the client
                args.append(Answer(need, result=self.done[need]))
        self._futures[name] = client.submit(
            run_node, node, settings, *args,
            key=f"{self.topic}-{name}", resources=wants, pure=False, retries=0,
        )
        self.submitted.append(name)

    async def _publish(self, name: str) -> None:
        """Copy the node's pinned inputs into the warehouse from its own fetch URLs.

        The workers fetch from the warehouse; a module's pinned inputs may be
        only where the client can read them (its workspace's staging
        warehouse, a catalog mirror on this host). Each ware is copied once
        (verified while it streams, :func:`repeatr.warehouse.mirror.mirror`);
        one the warehouse already has is not read at all.
        """
        from repeatr.model.wareid import GIT, WareID
        from repeatr.warehouse.mirror import mirror

        original = self.graph.nodes[name]
        for path, ware in sorted(original.inputs.items()):
            own = original.fetch_urls.get(path, ())
            if not isinstance(ware, str) or ware.startswith("mount:") or not own:
                continue
            parsed = WareID.parse(ware)
            if parsed.packtype == GIT or ware in self._published:
                continue
            await anyio.to_thread.run_sync(mirror, parsed, list(own), self.warehouse)
            self._published.add(ware)

    async def _memo_hit(self, name: str) -> NodeResult | None:
        """The node's record, if the client's memo store has one for its exact formula file."""
        if not self.options.use_memo:
            return None
        key = bytes_key(self._formula(name), self.options.executor)
        stored = await anyio.to_thread.run_sync(MemoStore(self.options.state).get, key)
        if stored is None:
            return None
        return NodeResult.of_record(name, stored, memo_hit=True)

    def _formula(self, name: str) -> bytes:
        """The node's formula file, filled in from the nodes it needs (all done)."""
        return formula_file(self._nodes[name], self.done)

    def _display(self, name: str) -> str:
        """How messages name the node: where it was written, else its name."""
        return self.graph.nodes[name].origin or f"step {name!r}"

    async def _collect(self, client: Client) -> None:
        from distributed import as_completed

        if self._cut_short:  # a failure while submitting, with fail_fast
            await self._stop(client)
        else:
            from distributed.client import FutureCancelledError

            pending = as_completed(  # type: ignore[no-untyped-call]
                list(self._futures.values()), loop=client.loop
            )
            names = {future.key: name for name, future in self._futures.items()}
            async for future in pending:
                name = names[future.key]
                if name in self.settled:
                    continue
                try:
                    # Its answer; or what the task raised (KilledWorker), or why its
                    # answer cannot be had (lost with its worker, cancelled): that
                    # node's failure, never the end of the others'.
                    answer = await future
                except (Exception, FutureCancelledError) as exc:
                    self._fail(name, task_failure(self._display(name), exc))
                else:
                    await self._settle(name, answer)
                if self._cut_short:
                    await self._stop(client)
                    break
        for name in self.graph.order:
            if name not in self.settled:
                self._skip(name)

    async def _settle(self, name: str, answer: Answer) -> None:
        self.workers[name] = answer.worker
        await self._wait_events(name, answer.events)
        if answer.blocked_by is not None:
            self._skip(name)
            return
        if answer.failure is not None:
            self._fail(name, answer.failure.error(), answer.seconds)
            return
        result = answer.result
        assert result is not None
        if problem := result_problem(self._nodes[name], result):
            # Not the job's answer: the worker's. Nothing of it is taken.
            self._fail(name, ExecutorError(
                f"{self._display(name)}: worker {answer.worker or '?'} answered {problem};"
                " the answer is not taken"), answer.seconds)
            return
        self.events.record(name, result.record_json)
        if result.exit_code != 0:
            self._fail(name, result, answer.seconds)
            return
        self.done[name] = result
        await self._remember(name, result)
        state = NodeState.MEMOIZED if result.memo_hit else NodeState.DONE
        self.events.state(name, state, answer.seconds)
        self._report_running()

    async def _remember(self, name: str, result: NodeResult) -> None:
        """Store a success in the client's memo store, as ``repeatr run`` of its file would."""
        from repeatr.runner.run import prepare, saved_files

        if not self.options.store_memo:  # --no-memo
            return
        data = self._formula(name)
        options = msgspec.structs.replace(self.options, use_memo=False)
        prepared = await anyio.to_thread.run_sync(
            prepare, self._display(name), options, RunnerEvents(), data
        )
        if prepared.loaded is None or not prepared.keys:
            return
        needs = saved_files(prepared.loaded, dict(result.results))
        memo = MemoStore(self.options.state)
        for key in prepared.keys:
            try:
                memo.put(key, result.record_json, needs)
            except OSError as exc:
                self.events.log(f"{name}: could not remember this run (the next one runs"
                                f" again): {exc.strerror or exc}")
                return

    async def _wait_events(self, name: str, count: int) -> None:
        """Let the node's events still on the way arrive before its answer is reported."""
        if self._received.get(name, 0) >= count:
            return
        arrived = anyio.Event()
        self._expected[name] = (count, arrived)
        started = anyio.current_time()
        with anyio.move_on_after(EVENTS_GRACE):
            await arrived.wait()
        self._expected.pop(name, None)
        self.events_waited += anyio.current_time() - started

    def _on_event(self, event: tuple[float, Any]) -> None:
        message = event[1]
        if not isinstance(message, list | tuple) or len(message) < 3:
            return
        kind, name = str(message[0]), str(message[1])
        if name not in self._nodes:
            return
        self._received[name] = self._received.get(name, 0) + 1
        if name in self._expected and self._received[name] >= self._expected[name][0]:
            self._expected[name][1].set()
        if kind == "running":
            self.workers[name] = str(message[2])
            self._running.add(name)
            self._report_running()
        elif kind == "output" and len(message) >= 4:
            self.events.output(name, str(message[2]), str(message[3]).encode())
        elif kind in ("log", "warn"):
            self.events.log(f"{name}: {message[2]}")

    def _report_running(self) -> None:
        """RUNNING for each node a worker started, once the nodes it needs are reported done.

        (A worker may start a node before the client has the answer it read.)
        """
        for name in [n for n in self.graph.order if n in self._running]:
            if name in self.settled:
                self._running.discard(name)
            elif self._nodes[name].needs <= self.done.keys() and name not in self._reported:
                self._reported.add(name)
                self.events.state(name, NodeState.RUNNING, 0.0)

    def _fail(self, name: str, what: NodeResult | RepeatrError, seconds: float = 0.0) -> None:
        self.failed[name] = what
        self.events.state(name, NodeState.FAILED, seconds)
        for dependent in self.graph.dependents(name):
            if dependent not in self.settled:
                self._skip(dependent)
        if self.batch.fail_fast and not self._cut_short:
            self._cut_short = True

    def _skip(self, name: str) -> None:
        if name not in self.skipped:
            self.skipped.add(name)
            self.events.state(name, NodeState.SKIPPED, 0.0)

    async def _stop(self, client: Client) -> None:
        """Cancel what is queued and what runs (cancelled, or ``fail_fast``)."""
        from repeatr.distributed.worker import cancel_run

        with anyio.CancelScope(shield=True), anyio.move_on_after(10):
            unsettled = [f for n, f in self._futures.items() if n not in self.settled]
            if unsettled:
                await client.cancel(unsettled)  # type: ignore[no-untyped-call]
            await client.run(cancel_run, self.topic)



def task_failure(display: str, exc: object) -> RepeatrError:
    """The error of a task that raised: its workers kept dying, or a bug."""
    if type(exc).__name__ == "KilledWorker":
        return ExecutorError(
            f"{display}: every worker that ran it died ({exc})",
            hint="the scheduler's allowed-failures (3 by default) were used up:"
            " the workers' logs say why they died",
        )
    return RepeatrError(
        f"{display}: internal error on the Dask worker: {exc!r} (please report this)",
        category=Category.INTERNAL,
    )


@dataclass(frozen=True)
class DaskGraphRunner:
    """``run_graph_dask`` on one cluster and warehouse, as a module's graph runner
    (:class:`repeatr.module.run.GraphRunner`)."""

    scheduler: str
    warehouse: str

    @property
    def outputs_at(self) -> str:
        return self.warehouse

    async def run(
        self, graph: Graph, options: RunOptions, batch: BatchOptions, events: GraphEvents
    ) -> GraphOutcome:
        return await run_graph_dask(
            graph, options, batch, events, scheduler=self.scheduler, warehouse=self.warehouse
        )
