"""Many formulas, one event loop: a batch under a capacity limiter.

Every formula runs as its own task in one task group. At most ``jobs`` of
their *jobs* run at once (from the helper's fork until the job has exited:
the sandbox server's bound, ``SandboxServer.limit_jobs``), like ``make -j``;
a few more formulas (``in_flight``) are read, looked up in the memo store
and prepared meanwhile, or finish after their job (outputs packed, the
record, the work dir's removal),
so no core idles while a formula waits on a CPU-light stage. Their sandbox
helpers are forked by one sandbox server (``repeatr.executors.server``) for
the whole batch. Each is memoized on its
own (``repeatr.runner.run``), and they share one
:class:`repeatr.cache.shared.SharedCache`, so an input used by several is
fetched and unpacked once and held until the batch ends. A formula that
fails (its file unreadable or invalid, a ware not found, its job exiting
non-zero) is reported with its file name; the others go on, unless
``fail_fast``: then the first failure cancels the rest (they are reported
as skipped). Cancelling the batch (Ctrl-C, SIGTERM) cancels every run, and
each tears down what it took.

The batch's exit status is the most severe of its formulas' (``most_severe``):

1. cancelled (8): the batch did not finish;
2. internal (2): a bug;
3. the host could not do the work: executor (42), cache during a run (41),
   cache (9), disk full (14), inoperable path (12), warehouse unwritable (4),
   warehouse unavailable (3);
4. a formula or its wares are wrong: job invalid (40), hash mismatch (7),
   ware corrupt (6), ware not found (5), assembly invalid (10), pack
   invalid (11), filter rejection (13), usage (1);
5. a job exited non-zero (20);
6. success (0).

Within a group, the order listed. A code outside these ranks just above success.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING

import anyio
import msgspec

from repeatr.errors import Category, RepeatrError, collapse
from repeatr.runner.run import (
    ExecutorChooser,
    Prepared,
    RunnerEvents,
    RunOptions,
    RunResult,
    answered,
    execute,
    net_settings,
    prepare,
)

if TYPE_CHECKING:
    import anyio.abc

    from repeatr.cache.shared import SharedCache
    from repeatr.executors.server import SandboxServer

#: Most severe first (see the module docstring).
SEVERITY: tuple[Category, ...] = (
    Category.CANCELLED,
    Category.INTERNAL,
    Category.EXECUTOR,
    Category.RUN_CACHE,
    Category.CACHE,
    Category.DISK_FULL,
    Category.INOPERABLE_PATH,
    Category.WAREHOUSE_UNWRITABLE,
    Category.WAREHOUSE_UNAVAILABLE,
    Category.JOB_INVALID,
    Category.HASH_MISMATCH,
    Category.WARE_CORRUPT,
    Category.WARE_NOT_FOUND,
    Category.ASSEMBLY_INVALID,
    Category.PACK_INVALID,
    Category.FILTER_REJECTION,
    Category.USAGE,
    Category.JOB_FAILED,
)


def most_severe(codes: Iterable[int]) -> int:
    """The exit status of a batch whose formulas gave ``codes``: 0 only if all are 0."""

    def rank(code: int) -> int:
        for n, category in enumerate(SEVERITY):
            if code == category:
                return n
        return len(SEVERITY) if code else len(SEVERITY) + 1

    return min(codes, key=rank, default=0)


class BatchItem(msgspec.Struct, frozen=True):
    """What one formula of a batch gave: a result, an error, or nothing (skipped)."""

    formula_file: str
    result: RunResult | None = None
    error: RepeatrError | None = None

    @property
    def skipped(self) -> bool:
        """Cancelled by ``fail_fast`` before it finished."""
        return self.result is None and self.error is None

    def exit_status(self, ignore_job_exit: bool = False) -> int:
        """As ``repeatr run`` of this formula alone would exit (skipped: 0)."""
        if self.error is not None:
            return self.error.exit_code
        if self.result is None or self.result.exit_code == 0 or ignore_job_exit:
            return 0
        return int(Category.JOB_FAILED)


class BatchOptions(msgspec.Struct, frozen=True):
    #: How many jobs run at once (at least 1); see ``in_flight``.
    jobs: int
    #: The first failure cancels the formulas still running or waiting.
    fail_fast: bool = False
    #: A job that exits non-zero is not a failure (``--ignore-job-exit``).
    ignore_job_exit: bool = False


def in_flight(jobs: int) -> int:
    """How many formulas (or graph nodes) are under way at once at ``-j jobs``.

    ``jobs`` bounds the jobs themselves (:meth:`SandboxServer.limit_jobs`);
    the others are being read, looked up and prepared, or torn down, which
    take little CPU: run inside the bound, they left cores idle while a
    formula waited for a thread hop or a helper's exit. ``-j 1`` stays one
    formula at a time, in the order given (nothing ahead).
    """
    jobs = max(1, jobs)
    return 1 if jobs == 1 else 2 * jobs + 2


class Preparer:
    """The batch's formulas read and looked up in the memo store ahead, ``chunk`` in
    one thread hop (``prepare``), not one hop each.

    A hop wakes a worker thread and the event loop (~0.2 ms of CPU): per
    formula, it was one of the batch process's three. The first formula
    whose own is not ready prepares it and the next ``chunk - 1`` (those
    listed so far); the others wait for that hop. What is ready is at most
    a chunk ahead of the formulas under way; ``-j 1`` (chunk 1) reads no
    formula before the one before it has finished.
    """

    def __init__(
        self,
        files: list[str],
        options: RunOptions,
        events_for: Callable[[str], RunnerEvents],
        chunk: int,
    ) -> None:
        self._files = files
        self._options = options
        self._events_for = events_for
        self._chunk = max(1, chunk)
        self._ready: dict[int, tuple[RunnerEvents, Prepared | RepeatrError]] = {}
        #: Indexes in a hop under way, and what is set when it ends.
        self._pending: dict[int, anyio.Event] = {}

    async def get(self, index: int) -> tuple[RunnerEvents, Prepared]:
        """Formula ``index``'s events and what ``prepare`` made of it (or its error, raised)."""
        while index not in self._ready:
            event = self._pending.get(index)
            if event is not None:
                await event.wait()
            else:
                await self._hop(index)
        events, got = self._ready.pop(index)
        if isinstance(got, RepeatrError):
            raise got
        return events, got

    async def _hop(self, first: int) -> None:
        import anyio.to_thread

        last = min(len(self._files), first + self._chunk)
        indexes = [
            i for i in range(first, last) if i not in self._ready and i not in self._pending
        ]
        event = anyio.Event()
        for i in indexes:
            self._pending[i] = event
        try:
            chunk = [(i, self._events_for(self._files[i])) for i in indexes]
            self._ready.update(await anyio.to_thread.run_sync(self._prepare, chunk))
        finally:
            for i in indexes:
                del self._pending[i]
            event.set()

    def _prepare(
        self, chunk: list[tuple[int, RunnerEvents]]
    ) -> dict[int, tuple[RunnerEvents, Prepared | RepeatrError]]:
        done: dict[int, tuple[RunnerEvents, Prepared | RepeatrError]] = {}
        for index, events in chunk:
            try:
                done[index] = events, prepare(self._files[index], self._options, events)
            except RepeatrError as err:
                done[index] = events, err
        return done


async def paths_from(fd: int) -> AsyncIterator[str]:
    """The formula paths read from ``fd`` (stdin), one a line, each as soon as its line ends.

    ``find ... | repeatr run -`` starts the first formulas while ``find`` is
    still listing. Blank lines are skipped, surrounding blanks stripped. A
    pipe, socket or terminal is waited on in the event loop (cancellable); a
    regular file is read whole (in a worker thread: it is all there already).
    """
    import anyio.to_thread

    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):

        def read_all() -> bytes:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)

        for line in (await anyio.to_thread.run_sync(read_all)).splitlines():
            if path := os.fsdecode(line).strip():
                yield path
        return
    pending = b""
    while True:
        await anyio.wait_readable(fd)
        chunk = os.read(fd, 1 << 16)  # readable: returns what is there without blocking
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop() if chunk else b""
        for line in lines:
            if path := os.fsdecode(line).strip():
                yield path
        if not chunk:
            return


async def run_batch(
    formula_files: Iterable[str] | AsyncIterable[str],
    options: RunOptions,
    batch: BatchOptions,
    *,
    events_for: Callable[[str], RunnerEvents] = lambda _file: RunnerEvents(),
    on_done: Callable[[BatchItem], None] = lambda _item: None,
    cache: SharedCache | None = None,
    on_wait: Callable[[str], None] | None = None,
    server: SandboxServer | None = None,
    log: Callable[[str], None] = lambda _message: None,
) -> list[BatchItem]:
    """Run every formula file; one item per file, in the order given.

    ``formula_files`` may be an async iterable (``paths_from``): each formula
    starts as soon as its path arrives, while the rest are still coming.

    ``events_for(file)``: where that formula's run reports (its ``record``
    callback sees the record as soon as it is known); ``on_done(item)``:
    called as each formula finishes, failed or not (never for skipped ones).
    ``cache``: the shared cache to use (it must be open); None: one on
    ``options.state`` for this batch, ``on_wait`` told when a lock is not free.
    ``server``: the sandbox server every job's helper is forked from (None:
    one for this batch, started by its first job that the memo store does
    not answer, stopped at its end). ``log``: the batch's own messages (what
    it reclaimed from dead runs, once, before the first formula).
    """
    from repeatr.cache.shared import SharedCache
    from repeatr.executors.server import SandboxServer

    files: list[str] = []
    done: dict[int, BatchItem] = {}
    # -j bounds the jobs (the server's bound, set below); a few more formulas
    # are under way beside them (``in_flight``).
    limiter = anyio.CapacityLimiter(in_flight(batch.jobs))
    chooser = ExecutorChooser()  # once per kind of job, not once per formula
    # prepare reads the memo settings only: none of what ``with_server`` changes below.
    preparer = Preparer(files, options, events_for, in_flight(batch.jobs))

    async def one(
        index: int,
        file: str,
        shared: SharedCache,
        sandbox: SandboxServer,
        tg: anyio.abc.TaskGroup,
        place: object,
    ) -> None:
        try:
            with sandbox.turn(index):  # its jobs start in this order
                try:
                    try:
                        ev, prepared = await preparer.get(index)
                        if prepared.hit is not None:
                            result = answered(prepared, options, ev)
                        else:
                            result = await execute(
                                prepared, options, ev, cache=shared, server=sandbox,
                                chooser=chooser,
                            )
                        item = BatchItem(file, result=result)
                    except BaseExceptionGroup as group:
                        raise collapse(group) from None
                except RepeatrError as err:
                    item = BatchItem(file, error=err)
                done[index] = item
                on_done(item)
                if batch.fail_fast and item.exit_status(batch.ignore_job_exit):
                    tg.cancel_scope.cancel()
        finally:
            limiter.release_on_behalf_of(place)

    async def start(
        index: int, shared: SharedCache, sandbox: SandboxServer, tg: anyio.abc.TaskGroup
    ) -> None:
        # The place is taken here, in the order given, not by the task racing
        # the others for it (trio starts new tasks in a random order): so -j 1
        # runs the formulas in their order on either backend.
        place = object()
        await limiter.acquire_on_behalf_of(place)
        tg.start_soon(one, index, files[index], shared, sandbox, tg, place)

    async def all_of(shared: SharedCache, sandbox: SandboxServer) -> None:
        sandbox.limit_jobs(batch.jobs)
        async with anyio.create_task_group() as tg:
            if isinstance(formula_files, AsyncIterable):
                paths = aiter(formula_files)
                try:
                    async for file in paths:
                        files.append(file)
                        await start(len(files) - 1, shared, sandbox, tg)
                finally:
                    # Cancelled mid-way (--fail-fast, Ctrl-C): close a generator now, not at GC.
                    if (aclose := getattr(paths, "aclose", None)) is not None:
                        with anyio.CancelScope(shield=True):
                            await aclose()
            else:
                files.extend(formula_files)  # all listed: those never started are skipped
                for index in range(len(files)):
                    await start(index, shared, sandbox, tg)

    async def with_server(shared: SharedCache) -> None:
        nonlocal options
        if options.collect_dead:
            # Once for the batch, not once per formula (~1 ms of CPU and a thread hop each).
            from repeatr.supervisor import RunEvents, collect_dead_runs

            net = net_settings(options.bridge, options.subnet)
            await collect_dead_runs(shared.root, net, RunEvents(log=log))
            options = msgspec.structs.replace(options, collect_dead=False)
        if server is not None:
            await all_of(shared, server)
        else:
            async with SandboxServer() as own:
                await all_of(shared, own)

    if cache is not None:
        await with_server(cache)
    else:
        shared_cache = SharedCache(options.state, on_wait=on_wait, ware_disk=options.ware_disk)
        async with shared_cache as shared:
            await with_server(shared)
    return [done.get(n, BatchItem(file)) for n, file in enumerate(files)]
