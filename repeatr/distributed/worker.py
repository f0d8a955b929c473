"""The worker side: ``dask worker SCHEDULER --preload repeatr.distributed``.

At start (``dask_setup``, before the worker registers with the scheduler)
repeatr checks the host: which executors pass their preflight here (what
``repeatr doctor`` reports), and which network policies they give. The
worker declares them as resources (:mod:`repeatr.distributed.resources`),
so a task asking for an executor or a network only goes where it exists.
``--repeatr-executors ns,chroot`` (after the preload) offers only those,
when the host has them.

Then it installs :class:`RepeatrWorker`, a worker plugin that owns an
event loop thread (an anyio blocking portal) with one sandbox server for
every job of this worker. A task (:func:`repeatr.distributed.task.run_node`,
in one of Dask's threads) hands its formula to that loop and waits.

Each worker keeps its own state (cache, memo store, work dirs) where repeatr
does: ``REPEATR_CACHE`` of the worker's environment, else ``/var/lib/repeatr``;
``REPEATR_BRIDGE``, ``REPEATR_SUBNET`` and ``REPEATR_WARE_DISK_LIMIT`` are
read there too. A worker killed mid-run leaves what a killed ``repeatr run``
leaves: the next run there (or ``repeatr gc``) removes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import click
from distributed import Worker, WorkerPlugin

from repeatr.distributed import resources
from repeatr.distributed.task import PLUGIN, Event, Settings
from repeatr.errors import Cancelled, ExecutorError, collapse
from repeatr.graph.model import NodeResult

if TYPE_CHECKING:
    from repeatr.executors.server import SandboxServer
    from repeatr.runner.run import RunnerEvents, RunOptions

#: Under ``distributed``: ``dask worker`` shows it like its own lines.
log = logging.getLogger("distributed.repeatr")


@dataclass(frozen=True)
class HostOffer:
    """What this host can run: usable executors, the network policies they give."""

    executors: tuple[str, ...]
    networks: tuple[str, ...]
    #: Executor -> why it is not usable here.
    unusable: dict[str, str]

    def resources(self) -> dict[str, float]:
        return resources.offered(self.executors, self.networks)


def host_offer(allowed: frozenset[str] | None = None) -> HostOffer:
    """Every executor whose preflight passes here (of ``allowed``, if given)."""
    from repeatr.errors import RepeatrError
    from repeatr.executors.base import available_names, load

    usable: list[str] = []
    networks: set[str] = set()
    unusable: dict[str, str] = {}
    for name in available_names():
        if allowed is not None and name not in allowed:
            unusable[str(name)] = "not offered (--repeatr-executors)"
            continue
        executor = load(name)()
        try:
            executor.preflight()
        except RepeatrError as e:
            unusable[str(name)] = e.message
            continue
        usable.append(str(name))
        policies = {str(p) for p in executor.capabilities().networks}
        networks |= policies
        if "none" in policies:
            networks.add("bridge")  # joins a namespace repeatr.net prepares
    return HostOffer(tuple(usable), tuple(sorted(networks)), unusable)


def _state() -> Path:
    from repeatr.cli.entry import state_root

    return Path(state_root(None))


class RepeatrWorker(WorkerPlugin):
    """Runs formulas for this worker's tasks in one event loop, with one sandbox server."""

    def __init__(self, offer: HostOffer) -> None:
        self.offer = offer
        self.state = _state()
        self._stack = ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._server: SandboxServer | None = None
        #: The cancel scopes of the runs going on, by the client run (topic) they belong to.
        self._running: dict[str, set[anyio.CancelScope]] = {}

    def setup(self, worker: Worker) -> None:
        self._portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(
                os.environ.get("REPEATR_ASYNC_BACKEND", "asyncio")
            )
        )
        portal = self._portal
        self._server = portal.call(self._new_server)
        self._stack.callback(lambda: portal.call(self._close_server))
        log.info("repeatr: state %s; executors %s; networks %s", self.state,
                 ", ".join(self.offer.executors) or "none", ", ".join(self.offer.networks))
        for name, why in sorted(self.offer.unusable.items()):
            log.info("repeatr: executor %s unusable: %s", name, why)

    def teardown(self, worker: Worker) -> None:
        self._stack.close()

    async def _new_server(self) -> SandboxServer:
        from repeatr.executors.server import SandboxServer

        return SandboxServer()

    async def _close_server(self) -> None:
        if self._server is not None:
            await self._server.aclose()

    async def _live_server(self) -> SandboxServer:
        """The worker's sandbox server; a new one if the last one died.

        A worker lives for long: a server that was killed (or crashed) must
        not fail every later job here. Its helpers died with it (each has a
        parent death signal toward it), and their jobs with them.
        """
        server = self._server
        if server is not None and (server.pid is None or process_alive(server.pid)):
            return server
        if server is not None:
            log.warning("repeatr: the sandbox server (pid %s) is gone; starting another",
                        server.pid)
            await server.aclose()
        self._server = await self._new_server()
        return self._server

    def options(self, settings: Settings) -> RunOptions:
        """The run options on this host: its state and settings, the client's choices."""
        from repeatr.runner.run import RunOptions

        return RunOptions(
            state=self.state,
            executor=settings.executor,
            use_memo=settings.use_memo,
            bridge=os.environ.get("REPEATR_BRIDGE"),
            subnet=os.environ.get("REPEATR_SUBNET"),
            ware_disk=os.environ.get("REPEATR_WARE_DISK_LIMIT"),
        )

    def run(
        self,
        name: str,
        display: str,
        formula: bytes,
        settings: Settings,
        emit: Callable[[Event], None],
    ) -> NodeResult:
        """Run the formula file ``formula`` of node ``name`` (blocking: called from a
        task's thread); messages name it ``display``.

        Raises ``RepeatrError`` for what stopped the run; ``Cancelled`` when
        the client cancelled it (:meth:`cancel`).
        """
        if self._portal is None:
            raise ExecutorError("the repeatr worker plugin is not set up")
        result = self._portal.call(self._run, display, formula, settings, events(name, emit))
        if result is None:
            raise Cancelled(f"{name}: cancelled by the client")
        return NodeResult.of_record(
            name, result.record_json, result.exit_code, result.memo_hit
        )

    async def _run(
        self, display: str, formula: bytes, settings: Settings, ev: RunnerEvents
    ) -> Any:
        from repeatr.runner.run import run

        scopes = self._running.setdefault(settings.topic, set())
        with anyio.CancelScope() as scope:
            scopes.add(scope)
            try:
                server = await self._live_server()
                try:
                    return await run(
                        display, self.options(settings), ev, server=server, data=formula
                    )
                except BaseExceptionGroup as group:  # the first real error, as locally
                    raise collapse(group) from None
            finally:
                scopes.discard(scope)
                if not scopes:
                    self._running.pop(settings.topic, None)
        return None  # cancelled

    def cancel(self, topic: str) -> int:
        """Cancel every run of the client run ``topic`` going on here; how many there were."""
        if self._portal is None:
            return 0

        def cancel_all() -> int:
            scopes = self._running.get(topic, set())
            for scope in scopes:
                scope.cancel()
            return len(scopes)

        return self._portal.call(cancel_all)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def events(name: str, emit: Callable[[Event], None]) -> RunnerEvents:
    """The runner's events for node ``name``, sent to the client."""
    from repeatr.runner.run import RunnerEvents

    def output(stream: str, line: bytes) -> None:
        emit(["output", name, stream, line.decode("utf-8", "replace")])

    return RunnerEvents(
        log=lambda message: emit(["log", name, message]),
        warn=lambda message: emit(["warn", name, message]),
        output=output,
    )


def cancel_run(topic: str, dask_worker: Worker) -> int:
    """``client.run`` target: cancel the runs of ``topic`` on this worker."""
    plugin = dask_worker.plugins.get(PLUGIN)
    return plugin.cancel(topic) if isinstance(plugin, RepeatrWorker) else 0


@click.command()
@click.option(
    "--repeatr-executors", default=None, metavar="NAMES",
    help="offer only these executors (comma-separated), of those this host has",
)
async def dask_setup(worker: Worker, repeatr_executors: str | None) -> None:
    """The preload: check the host, declare its resources, install the plugin."""
    allowed = None
    if repeatr_executors is not None:
        allowed = frozenset(n.strip() for n in repeatr_executors.split(",") if n.strip())
    offer = await anyio.to_thread.run_sync(host_offer, allowed)
    for resource, count in offer.resources().items():
        worker.state.total_resources[resource] = count
        worker.state.available_resources[resource] = count
    await worker.plugin_add(plugin=RepeatrWorker(offer), name=PLUGIN)
