"""One formula, from its file to its run record: the memo decision, then the run.

``prepare`` (sync, no event loop) reads the formula and decides whether the
memo store answers it; ``execute`` (async) runs what ``prepare`` could not
answer: executor, cache, network settings, ``run_formula``, then stores the
record and writes ``--output-dir``. ``run`` does both; ``run_sync`` is
``run`` in an event loop of its own.

What a memo hit is, is decided here (``prepare``) and, for the fast path of
``repeatr.cli.entry``, in :meth:`repeatr.memo.MemoStore.get_by_file`, both
keying the formula file's bytes with :func:`repeatr.memo.bytes_key`: first
those bytes, then the formula ID with the executor asked for; a hit needs
the files its saved outputs live in. Only a job that exited 0 is stored,
and never one with a host directory (``mount:``) among its inputs.

Import-light on purpose: a memo hit by formula ID (``repeatr run`` of a
formula seen before under another file name) needs the model and the memo
store only; the supervisor, executors and cache (and anyio) are imported by
``execute``. Their types are imported under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from repeatr.errors import Category, DiskFull, RepeatrError, is_no_space
from repeatr.memo import MemoStore, bytes_key, formula_key

if TYPE_CHECKING:
    from repeatr.cache import Cache
    from repeatr.check import CheckReport
    from repeatr.executors.base import Executor
    from repeatr.executors.choose import Needs
    from repeatr.executors.server import SandboxServer
    from repeatr.model.formula import FormulaFile
    from repeatr.model.runrecord import RunRecord
    from repeatr.runner.steps import NetSettings, RunEvents
    from repeatr.supervisor import RunOutcome


def _ignore(_message: str) -> None:
    pass


class RunOptions(msgspec.Struct, frozen=True):
    """How to run: host settings and choices, never part of the formula."""

    #: The state directory: cache, memo store, work dirs.
    state: Path
    #: ``auto`` or an executor's name (``repeatr.runner.EXECUTORS``).
    executor: str = "auto"
    #: Answer from the memo store when it can (``--no-memo``: False).
    use_memo: bool = True
    #: Store the record of a successful run (``--no-memo``, ``twerk``: False).
    store_memo: bool = True
    #: The host bridge and its subnet for ``"network": "bridge"`` (None: the defaults).
    bridge: str | None = None
    subnet: str | None = None
    #: What one ware may write when unpacked (``50%``, ``20G``, ``none``); None: the default.
    ware_disk: str | None = None
    #: When the job exits 0, also write each output's ware ID and the record here.
    output_dir: Path | None = None
    #: Run this instead of the formula's exec (``twerk -- COMMAND``); never memoized.
    command: tuple[str, ...] = ()
    #: A terminal for an interactive job (``twerk``).
    tty: int | None = None
    #: Reclaim what dead runs left (work dirs, cgroups, networks) before running;
    #: a batch does it once for all its formulas, then runs each without.
    collect_dead: bool = True

    @classmethod
    def of_command(
        cls,
        state: str,
        *,
        executor: str = "auto",
        no_memo: bool = False,
        bridge: str | None = None,
        subnet: str | None = None,
        ware_disk: str | None = None,
        output_dir: str | None = None,
    ) -> RunOptions:
        """The options of command-line values (``state``: ``cli.entry.state_root``'s); what
        a command line left out (None), its environment variable's, or the default.

        The one builder for the full CLI (``repeatr.cli.options.run_options``) and
        the lean single run (``repeatr.runner.single.Args.options``): the two
        parse ``repeatr run`` differently, and must not drift.
        """
        env = os.environ
        return cls(
            state=Path(state),
            executor=executor,
            # --no-memo: neither answered from the memo store nor stored in it.
            use_memo=not no_memo,
            store_memo=not no_memo,
            bridge=env.get("REPEATR_BRIDGE") if bridge is None else bridge,
            subnet=env.get("REPEATR_SUBNET") if subnet is None else subnet,
            # None: the default share of free space (repeatr.fileset.limits, only
            # imported by an unpack: not on the memo hit path).
            ware_disk=ware_disk or env.get("REPEATR_WARE_DISK_LIMIT"),
            output_dir=Path(output_dir) if output_dir is not None else None,
        )


class RunnerEvents(msgspec.Struct):
    """Where a run reports what happens; every callback may be left out."""

    log: Callable[[str], None] = _ignore
    debug: Callable[[str], None] = _ignore
    warn: Callable[[str], None] = _ignore
    #: A line of the job's ``stdout`` or ``stderr``.
    output: Callable[[str, bytes], None] = lambda _stream, _line: None
    #: Bytes done in a phase (``fetch``, ``unpack``, ``pack``).
    progress: Callable[[str, int], None] = lambda _phase, _done: None
    #: The run record's JSON as soon as it is known: a memo hit's at once, a
    #: run's before its teardown (a caller reading it need not wait for that).
    record: Callable[[bytes], None] = lambda _record: None
    #: The result, as soon as it is final: a memo hit's at once, a run's when
    #: its record is (before the teardown that ``run`` still waits for, which
    #: may still fail; ``outcome`` is None here). A graph starts the next node then.
    settled: Callable[[RunResult], None] = lambda _result: None

    @property
    def debugging(self) -> bool:
        """Whether ``debug`` was given: if not, no debug line is even built (a spec's
        JSON, command lines: work a batch would do for nothing, per formula)."""
        return self.debug is not _ignore

    def for_supervisor(self, finished: Callable[[RunRecord], None] | None = None) -> RunEvents:
        """The supervisor's events: these callbacks, and ``finished`` for the record."""
        from repeatr.runner.steps import RunEvents

        events = RunEvents(log=self.log, output=self.output, progress=self.progress)
        if self.debugging:
            events.debug = self.debug
        if finished is not None:
            events.finished = finished
        return events


class RunResult(msgspec.Struct, frozen=True):
    """What one formula gave: its record, as printed."""

    formula_file: str
    record_json: bytes
    #: The job's exit code (a memo hit's is 0: only successes are stored).
    exit_code: int
    memo_hit: bool
    #: The supervisor's outcome; None for a memo hit.
    outcome: RunOutcome | None = None

    @property
    def record(self) -> dict[str, object]:
        parsed: dict[str, object] = msgspec.json.decode(self.record_json)
        return parsed


class Prepared(msgspec.Struct, frozen=True):
    """A formula read and looked up in the memo store: a hit, or what to run."""

    formula_file: str
    #: The stored record, if the memo store answers.
    hit: bytes | None = None
    #: None only for a hit by file (the formula was not even parsed).
    loaded: FormulaFile | None = None
    formula_id: str = ""
    #: The keys a successful run is stored under (empty: never stored).
    keys: tuple[str, ...] = msgspec.field(default=())


def prepare(
    formula_file: str, options: RunOptions, events: RunnerEvents, data: bytes | None = None
) -> Prepared:
    """Read ``formula_file`` and decide whether the memo store answers it (blocking).

    ``data``: the formula file's bytes, given instead of read (``formula_file``
    then only names it in messages); a hit by file is a hit by these bytes.
    Raises ``FormulaError`` (usage, exit 1) for a file that cannot be read or
    is not a valid formula, naming the file.
    """
    if data is None:
        # Read once: the key by file and the formula run come from the same
        # bytes (read twice, a file swapped in between would store one
        # formula's record under the other's key).
        from repeatr.model.formula import read_formula_file

        data = read_formula_file(formula_file)
    memo = MemoStore(options.state)
    remember = options.store_memo and not options.command
    lookup = options.use_memo and not options.command
    fast_key: str | None = None
    if lookup or remember:
        fast_key = bytes_key(data, options.executor)
    if lookup:
        assert fast_key is not None
        stored = memo.get(fast_key)
        if stored is not None:
            events.debug("memo hit (formula file seen before)")
            return Prepared(formula_file, hit=stored)

    loaded = load(formula_file, events, options.command, data)
    from repeatr.model.formula_id import formula_id

    fid = formula_id(loaded.formula)
    if not remember:
        return Prepared(formula_file, loaded=loaded, formula_id=fid)
    keys = (formula_key(fid, options.executor), *((fast_key,) if fast_key else ()))
    if mounts := host_mounts(loaded):
        # A host directory can change between runs: its record says nothing
        # about the next one. Never stored, so never replayed either.
        what = "is a host mount" if len(mounts) == 1 else "are host mounts"
        events.log(f"not memoized: {', '.join(mounts)} {what} (mount:), which can change")
        return Prepared(formula_file, loaded=loaded, formula_id=fid)
    if lookup and (stored := memo.get(keys[0])):
        # The formula ID leaves the context out: this file may save elsewhere.
        needs = saved_files(loaded, msgspec.json.decode(stored)["results"])
        if all(os.path.exists(p) for p in needs):
            events.debug(f"memo hit: {fid}")
            _remember(events, memo, keys[1:], stored, needs)
            return Prepared(formula_file, hit=stored, loaded=loaded, formula_id=fid)
        events.debug(f"memo entry for {fid} skipped: a saved output is gone; running again")
    return Prepared(formula_file, loaded=loaded, formula_id=fid, keys=keys)


def load(
    formula_file: str,
    events: RunnerEvents,
    command: tuple[str, ...] = (),
    data: bytes | None = None,
) -> FormulaFile:
    """The formula file, parsed and validated; what it has that is ignored, as warnings.

    ``command``: run this instead of the formula's exec. ``data``: the file's
    bytes, given instead of read (``formula_file`` names them in messages).
    """
    from repeatr.model.formula import load_formula_bytes, load_formula_file, warnings

    if data is None:
        loaded = load_formula_file(formula_file)
    else:
        loaded = load_formula_bytes(data, formula_file)
    for message in warnings(loaded.formula):
        events.warn(message)
    if command:
        import msgspec

        action = msgspec.structs.replace(loaded.formula.action, exec=command)
        loaded = msgspec.structs.replace(
            loaded, formula=msgspec.structs.replace(loaded.formula, action=action)
        )
    return loaded


def publish(
    record: RunRecord,
    prepared: Prepared,
    options: RunOptions,
    events: RunnerEvents,
    memo: MemoStore,
) -> bytes:
    """A run's final record, as printed: stored in the memo store if the job exited 0
    (and ``prepared`` has keys), reported, and written to ``--output-dir``."""
    from repeatr.model.runrecord import encode_pretty

    assert prepared.loaded is not None
    record_json = encode_pretty(record)
    if record.exit_code == 0:
        needs = saved_files(prepared.loaded, dict(record.results))
        _remember(events, memo, prepared.keys, record_json, needs)
    events.record(record_json)
    if record.exit_code == 0 and options.output_dir is not None:
        write_output_dir(options.output_dir, record_json)
    return record_json


def answered(prepared: Prepared, options: RunOptions, events: RunnerEvents) -> RunResult:
    """The result of a memo hit: its record reported, ``--output-dir`` written."""
    assert prepared.hit is not None
    events.record(prepared.hit)
    if options.output_dir is not None:
        write_output_dir(options.output_dir, prepared.hit)
    result = RunResult(prepared.formula_file, prepared.hit, 0, memo_hit=True)
    events.settled(result)
    return result


async def run(
    formula_file: str,
    options: RunOptions,
    events: RunnerEvents | None = None,
    *,
    cache: Cache | None = None,
    server: SandboxServer | None = None,
    data: bytes | None = None,
    chooser: ExecutorChooser | None = None,
    keep_outputs: frozenset[str] = frozenset(),
) -> RunResult:
    """Run the formula in ``formula_file`` (or answer it from the memo store).

    ``cache``: the cache to take shelves from (a batch shares one,
    :class:`repeatr.cache.shared.SharedCache`); None: one on ``options.state``.
    ``server``: the invocation's sandbox server (a batch shares one,
    :class:`repeatr.executors.server.SandboxServer`); None: one for this run.
    ``data``: the formula file's bytes (a graph's node), not read from
    ``formula_file``, which then only names it.
    ``chooser``: remembers executor choices (a batch shares one); None: choose anew.
    ``keep_outputs``: output paths put into ``cache`` as they are packed, for
    the runs that read them next (a graph's; see ``run_formula``).
    Raises ``RepeatrError`` for what stopped the run; a job that exits
    non-zero is not an error (the result has its code).
    """
    import anyio.to_thread

    ev = events or RunnerEvents()
    # In a thread: reading the file (it may be a pipe) and the memo store block.
    prepared = await anyio.to_thread.run_sync(prepare, formula_file, options, ev, data)
    if prepared.hit is not None:
        return answered(prepared, options, ev)
    return await execute(
        prepared, options, ev, cache=cache, server=server, chooser=chooser,
        keep_outputs=keep_outputs,
    )


def run_sync(
    formula_file: str, options: RunOptions, events: RunnerEvents | None = None
) -> RunResult:
    """``run`` in an event loop of its own (``REPEATR_ASYNC_BACKEND``, default asyncio)."""
    import anyio

    async def main() -> RunResult:
        return await run(formula_file, options, events)

    return anyio.run(main, backend=os.environ.get("REPEATR_ASYNC_BACKEND", "asyncio"))


async def execute(
    prepared: Prepared,
    options: RunOptions,
    events: RunnerEvents,
    *,
    cache: Cache | None = None,
    server: SandboxServer | None = None,
    chooser: ExecutorChooser | None = None,
    keep_outputs: frozenset[str] = frozenset(),
) -> RunResult:
    """Run a prepared formula that the memo store did not answer (``run`` says what
    ``cache``, ``server``, ``chooser`` and ``keep_outputs`` are)."""
    from repeatr.model.runrecord import encode_pretty
    from repeatr.supervisor import run_formula

    loaded = prepared.loaded
    assert loaded is not None
    if chooser is not None:
        executor = chooser.executor(chooser(options.executor, loaded, events), events, server)
    else:
        executor = make_executor(choose_executor(options.executor, loaded, events), events, server)
    memo = MemoStore(options.state)
    printed: list[bytes] = []

    def finished(record: RunRecord) -> None:
        # Called as soon as the result is known, before teardown.
        record_json = publish(record, prepared, options, events, memo)
        printed.append(record_json)
        events.settled(
            RunResult(prepared.formula_file, record_json, record.exit_code, memo_hit=False)
        )

    outcome = await run_formula(
        loaded,
        executor=executor,
        cache=cache or open_cache(options, events),
        events=events.for_supervisor(finished),
        net=net_settings(options.bridge, options.subnet),
        tty=options.tty,
        collect_dead=options.collect_dead,
        known_id=prepared.formula_id,  # computed by prepare, for the memo store
        keep_outputs=keep_outputs,
    )
    code = outcome.record.exit_code
    record_json = printed[0] if printed else encode_pretty(outcome.record)
    return RunResult(prepared.formula_file, record_json, code, memo_hit=False, outcome=outcome)


async def check(
    formula_file: str, options: RunOptions, events: RunnerEvents, *, runs: int
) -> CheckReport:
    """Run the formula ``runs`` times, never memoized, and compare its outputs.

    See :mod:`repeatr.check`: outputs go to a private scratch warehouse.
    """
    import anyio.to_thread

    from repeatr.check import check_formula
    from repeatr.executors.server import SandboxServer

    loaded = await anyio.to_thread.run_sync(load, formula_file, events)
    name = choose_executor(options.executor, loaded, events)
    async with SandboxServer() as server:  # one for every run of the check
        executor = make_executor(name, events, server)
        executor.preflight()
        return await check_formula(
            loaded,
            executor=executor,
            cache=open_cache(options, events),
            runs=runs,
            events=events.for_supervisor(),
        )


def open_cache(options: RunOptions, events: RunnerEvents) -> Cache:
    """The cache on ``options.state``; a wait for another process's lock is logged."""
    from repeatr.cache import Cache

    return Cache(options.state, on_wait=events.log, ware_disk=options.ware_disk)


def needs(loaded: FormulaFile, requested: str) -> Needs:
    """What the formula asks of its executor (for choosing one)."""
    from repeatr.executors.choose import Needs

    action = loaded.formula.action
    return Needs(
        # Absent: isolated where auto can choose; an executor asked for by name
        # gives its best (chroot: the host's network, and says so).
        network=action.network or ("none" if requested == "auto" else ""),
        limits=action.limits.names() if action.limits is not None else frozenset(),
        hostname=bool(action.hostname),
    )


def choose_executor(requested: str, loaded: FormulaFile, events: RunnerEvents) -> str:
    """The executor to use: the one asked for, or the best one that can run this job."""
    from repeatr.executors.choose import choose

    name, reasons = choose(requested, needs(loaded, requested))
    for reason in reasons:
        events.debug(f"executor {reason}")
    events.debug(f"executor: {name}" + (" (auto)" if requested == "auto" else ""))
    return str(name)


class ExecutorChooser:
    """``choose_executor`` that remembers each choice, per executor asked for and needs,
    and the executors it made.

    A batch shares one: its formulas mostly need the same, and choosing
    (preflights, capabilities: ~0.8 ms) once per kind of job is enough; so
    is making the executor, which then asks the host its capabilities once.
    """

    def __init__(self) -> None:
        self._chosen: dict[tuple[str, Needs], str] = {}
        self._made: dict[tuple[str, SandboxServer | None], Executor] = {}

    def executor(
        self, name: str, events: RunnerEvents, server: SandboxServer | None = None
    ) -> Executor:
        """``make_executor``, one per name and server; a new one for a run whose
        debug lines are wanted (they go to that run's ``events``)."""
        if events.debugging:
            return make_executor(name, events, server)
        made = self._made.get((name, server))
        if made is None:
            made = self._made[(name, server)] = make_executor(name, events, server)
        return made

    def __call__(self, requested: str, loaded: FormulaFile, events: RunnerEvents) -> str:
        key = (requested, needs(loaded, requested))
        name = self._chosen.get(key)
        if name is None:
            name = self._chosen[key] = choose_executor(requested, loaded, events)
        else:
            events.debug(f"executor: {name} (chosen for an earlier formula with the same needs)")
        return name


def make_executor(
    name: str, events: RunnerEvents, server: SandboxServer | None = None
) -> Executor:
    """An executor by name, reporting its debug lines to ``events``, its jobs
    forked by ``server`` (None: a server per job)."""
    from repeatr.executors.base import load as load_executor
    from repeatr.executors.helper import HelperExecutor

    cls = load_executor(name)
    on_debug = events.debug if events.debugging else None
    if name == "vm":
        from repeatr.executors.vm import VmExecutor

        return VmExecutor(on_debug=on_debug, server=server, on_warning=events.warn)
    if issubclass(cls, HelperExecutor):
        return cls(on_debug=on_debug, server=server)
    return cls(on_debug=on_debug)


def net_settings(bridge: str | None, subnet: str | None) -> NetSettings:
    """The bridge and subnet for ``"network": "bridge"``: host settings, not the formula's."""
    from repeatr.runner.steps import NetSettings

    if not (bridge or subnet):
        return NetSettings()
    from repeatr.net.config import DEFAULT_NETWORK, Network, parse_subnet

    bridge = bridge or DEFAULT_NETWORK.bridge
    name = "".join(c if c.isalnum() else "_" for c in bridge.lower())
    parsed = parse_subnet(subnet) if subnet else DEFAULT_NETWORK.subnet
    return NetSettings(network=Network(name=name, bridge=bridge, subnet=parsed))


def host_mounts(loaded: FormulaFile) -> list[str]:
    """The formula's input paths that are host directories (``mount:ro:``/``mount:rw:``)."""
    from repeatr.model.formula import HostMount

    sources = loaded.formula.input_sources().items()
    return sorted(path for path, source in sources if isinstance(source, HostMount))


def _remember(
    events: RunnerEvents,
    memo: MemoStore,
    keys: tuple[str, ...],
    record_json: bytes,
    needs: list[str],
) -> None:
    """Store the record under every key; a store that fails is a warning, never the run's end.

    The run is done and its record is about to be reported: a full state disk
    (or any other write failure) only means the next run will not be a hit.
    ``MemoStore.put`` leaves no partial entry behind.
    """
    for key in keys:
        try:
            memo.put(key, record_json, needs)
        except OSError as exc:
            events.warn(
                f"could not remember this run (the next one runs again): cannot write"
                f" {exc.filename or memo.dir}: {exc.strerror or exc}"
            )
            return


def saved_files(loaded: FormulaFile, results: dict[str, str]) -> list[str]:
    """The files on this host that a run's saved outputs live in (a memo hit needs them).

    Outputs saved to ``ca+file://`` and ``file://`` warehouses; others
    (HTTP) are not checked.
    """
    save_urls = loaded.context.save_urls if loaded.context is not None else {}
    # An empty output ("tar:-") is never saved: nothing to need.
    saved = {p: u for p, u in save_urls.items() if not results.get(p, ":-").endswith(":-")}
    if not saved:
        return []
    from repeatr.model.wareid import WareID
    from repeatr.warehouse import warehouse_for
    from repeatr.warehouse.cafile import CAFileWarehouse
    from repeatr.warehouse.file import FileWarehouse

    files = []
    for path, url in sorted(saved.items()):
        wh = warehouse_for(url)
        if isinstance(wh, CAFileWarehouse):
            files.append(os.fspath(wh.ware_path(WareID.parse(results[path]))))
        elif isinstance(wh, FileWarehouse):
            files.append(os.fspath(wh.path))
    return files


def write_output_dir(directory: Path, record_json: bytes) -> None:
    """``--output-dir``: each output's ware ID, then the record, each file written atomically.

    A ``.ware_id`` file is rewritten only when its ID changed, so make rules
    depending on it rerun only when the output did; ``record.json`` (written
    last: it marks the set complete) is always rewritten.

    repeatr runs as root and the directory may be another user's (a shared
    build tree): it is opened once, after it is made, and every file is
    read and written relative to that descriptor, never through a path
    resolved again (a symlink swapped in for the directory meanwhile is not
    followed); each temp file has a random name and is created
    ``O_EXCL | O_NOFOLLOW`` (a symlink planted at a temp name is not
    followed), and is removed whatever interrupts the write.
    """
    def put(dirfd: int, name: str, data: bytes, *, if_changed: bool) -> None:
        path = directory / name
        if if_changed:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except OSError:
                pass
            else:
                with os.fdopen(fd, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        return
        tmp = f".{name}.{os.urandom(8).hex()}.tmp"
        try:
            try:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644, dir_fd=dirfd,
                )
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dirfd)
                raise
        except OSError as exc:
            if is_no_space(exc):
                raise DiskFull.of(exc, path, "write --output-dir's") from exc
            raise RepeatrError(
                f"--output-dir: cannot write {path}: {exc.strerror or exc}",
                category=Category.INOPERABLE_PATH,
            ) from exc

    try:
        directory.mkdir(parents=True, exist_ok=True)
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise RepeatrError(
            f"--output-dir: cannot create {directory}: {exc.strerror or exc}",
            category=Category.INOPERABLE_PATH,
        ) from exc
    try:
        results: dict[str, str] = msgspec.json.decode(record_json).get("results") or {}
        for path, ware in sorted(results.items()):
            name = path.replace("/", "_") + ".ware_id"
            put(dirfd, name, f"{ware}\n".encode(), if_changed=True)
        put(dirfd, "record.json", record_json, if_changed=False)
    finally:
        os.close(dirfd)
