"""What one Dask task runs on a worker, and the plain data it returns.

``run_node(node, settings, *needed)`` is the task of one graph node. Its
``needed`` arguments are the :class:`Answer`\\s of the nodes it reads from
(Dask passes them in: the client submits it with their futures, so Dask
knows the dependencies and moves their answers, which are small). It fills
in the node's formula file from them (:func:`repeatr.graph.model.formula_file`)
and runs it with repeatr's runner on this worker
(:class:`repeatr.distributed.worker.RepeatrWorker`).

A task never raises for what happens to its formula: a job that exits
non-zero is a :class:`~repeatr.graph.model.NodeResult` with its code, an
error that stopped the run is an :class:`Answer` carrying it, a node whose
needed node failed is an :class:`Answer` saying which. Dask retries a task
only when its worker dies (the scheduler's ``allowed-failures``), never a
job's answer.

While it runs, the task reports to the client through Dask's event log
(``Worker.log_event`` on the run's topic, :data:`Event` messages).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from repeatr.errors import Category, ExecutorError, RepeatrError
from repeatr.graph.model import Node, NodeResult, formula_file

if TYPE_CHECKING:
    from distributed import Worker

#: The worker plugin's name (``Worker.plugins[PLUGIN]``).
PLUGIN = "repeatr"

#: What a worker reports while a task runs, on the run's topic (msgpack-able lists):
#: ``["running", node, worker address]``, ``["output", node, stream, line]``,
#: ``["log", node, message]``, ``["warn", node, message]``.
Event = list[str]


@dataclass(frozen=True)
class Settings:
    """What the client decides for every task of a run (the worker adds its own host settings)."""

    #: ``auto`` or an executor's name.
    executor: str
    #: Let the worker's memo store answer (``--no-memo``: False).
    use_memo: bool
    #: The event topic the client listens on.
    topic: str


@dataclass(frozen=True)
class Failure:
    """An error that stopped a node's run, as plain data (category, message, hint)."""

    category: int
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, error: RepeatrError) -> Failure:
        return cls(int(error.category), error.message, error.hint)

    def error(self) -> RepeatrError:
        """The error it carries; a category this repeatr does not know is an executor error."""
        try:
            category = Category(self.category)
        except ValueError:
            category = Category.EXECUTOR
        return RepeatrError(self.message, category=category, hint=self.hint)


@dataclass(frozen=True)
class Answer:
    """What one task gave: a result, a failure, or that a node it needs did not succeed."""

    name: str
    result: NodeResult | None = None
    failure: Failure | None = None
    #: The needed node that did not exit 0 (nothing ran).
    blocked_by: str | None = None
    #: The worker that ran it, and how long its run took there.
    worker: str = ""
    seconds: float = 0.0
    #: How many events the task sent (the client waits for them before reporting the answer).
    events: int = 0

    @property
    def ok(self) -> bool:
        """It ran (or was memoized) and exited 0: nodes reading from it can run."""
        return self.result is not None and self.result.exit_code == 0


def run_node(node: Node, settings: Settings, *needed: Answer) -> Answer:
    """The task of ``node``: its formula run on this worker (see the module docstring)."""
    from distributed import get_worker

    for answer in needed:
        if not answer.ok:
            return Answer(node.name, blocked_by=answer.name)
    from repeatr.distributed.worker import RepeatrWorker

    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN)
    if not isinstance(plugin, RepeatrWorker):
        missing = ExecutorError(
            f"Dask worker {worker.address} has no repeatr preload",
            hint="start workers with `dask worker SCHEDULER --preload repeatr.distributed`",
        )
        return Answer(node.name, failure=Failure.of(missing), worker=worker.address)
    started = time.monotonic()
    sent = 0

    def emit(event: Event) -> None:
        nonlocal sent
        sent += 1
        report(worker, settings.topic, event)

    def answered(result: NodeResult | None = None, failure: Failure | None = None) -> Answer:
        return Answer(node.name, result=result, failure=failure, worker=worker.address,
                      seconds=time.monotonic() - started, events=sent)

    try:
        data = formula_file(node, {a.name: a.result for a in needed if a.result is not None})
        emit(["running", node.name, worker.address])
        display = node.origin or f"step {node.name!r}"
        return answered(result=plugin.run(node.name, display, data, settings, emit))
    except RepeatrError as error:
        return answered(failure=Failure.of(error))


def report(worker: Worker, topic: str, event: Event) -> None:
    """Send ``event`` to the client (through the scheduler's event log)."""
    worker.log_event(topic, event)
