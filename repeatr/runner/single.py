"""A single ``repeatr run``, driven synchronously: no event loop, no anyio, no asyncio.

The full path (``repeatr.cli.main`` → ``run_cmds.cmd_run`` → ``runner.run.execute``
→ ``supervisor.run_formula`` under anyio) costs a single run ~80 ms of
imports before any work (asyncio, anyio, argparse). This is the same run
driven by blocking calls, for the common case only; it reuses the full
path's blocks: ``runner.run.prepare`` (formula, ID, memo), ``choose_executor``
and ``make_executor``, the run's steps (:mod:`repeatr.runner.steps`: network
policy, work dir and job spec, dead runs, packing, the record), the cache's
``Cache.shelf``, the executor's ``check_job`` and ``spec``, the server's
protocol (:class:`repeatr.executors.server.BlockingServer`), the helper's
(:class:`repeatr.executors.conversation.Conversation`, the full path's too:
only the bytes are moved here, by ``poll``), the record's encoding, the memo
store and ``--output-dir``.

:func:`lean_run` decides up front, before anything irreversible (only
reads), whether it covers the invocation (:func:`plan`); if not, it returns
None and the full CLI takes it, from the start. Covered: ``repeatr run FILE``
(a regular file) with only the options in ``_FLAGS``/``_VALUED``; executor
``auto``, ``ns`` or ``chroot`` resolving to ns or chroot; a network other
than ``bridge``; every ware input a shelf already in the cache; outputs not
saved, or saved to ``file://``/``ca+file://`` warehouses. Not covered, so
the full path: ``--debug``, a batch, ``-``, a pipe, ``--dask``, an
unknown option, a formula that does not load or cannot run (its error is
the full path's to report), a missing shelf (fetched and unpacked there),
a bridge network, an output saved over HTTP, runc/crun/gvisor/vm.

Signals: once committed, SIGINT, SIGTERM and SIGHUP are only recorded
(``repeatr.cli.entry.set_in_loop``) and wake the wait for the job
(``signal.set_wakeup_fd``); every step checks for one and unwinds: the
helper is stopped (SIGTERM, then SIGKILL), shelves released, the work dir
removed, exit 8, as on the full path.

``REPEATR_SINGLE=0`` turns this path off (the full path runs everything);
``REPEATR_SINGLE_TRACE=FILE`` appends a line to FILE for each ``repeatr
run`` decided here (tests, benchmarks): ``full: <why>``, or, once a lean run
is done, ``lean: imported ...`` naming which modules of :data:`HEAVY` the
process imported (none, unless something else did).
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from repeatr.cli.entry import pending_signal, resume_gc, scan_run, set_in_loop, state_root
from repeatr.errors import Cancelled, Category, ExecutorError, RepeatrError

if TYPE_CHECKING:
    from repeatr.cli.output import Reporter
    from repeatr.executors.base import JobResult, JobSpec
    from repeatr.executors.conversation import JobPipes
    from repeatr.executors.helper import HelperExecutor
    from repeatr.executors.protocol import Spec
    from repeatr.executors.server import BlockingServer, Helper
    from repeatr.executors.spawn import ServerProcess
    from repeatr.model.formula import Formula
    from repeatr.model.runrecord import RunRecord
    from repeatr.runner.run import Prepared, RunnerEvents, RunOptions

_FLAGS = {"-q", "--quiet", "--ignore-job-exit", "--no-memo"}
_VALUED = {"--cache", "-e", "--executor", "--format", "--ware-disk-limit", "--output-dir"}
_EXECUTORS = ("auto", "ns", "chroot")
#: Modules a lean run must never import (the trace names any it did; a test checks):
#: the event loops and argparse, and what costs a run milliseconds for a few calls
#: (``socket``: ``repeatr.executors.wire`` uses ``_socket``; ``shutil``: the work dir's
#: removal is ``repeatr.workdir``'s own; ``threading``: a ``_thread`` lock does;
#: ``shlex``: only ``--debug`` shows commands; ``ctypes``: the kernel calls are
#: ``repeatr.linux._libc``'s, libseccomp's version too; ``json``: msgspec reads and
#: writes, and a small formula file is checked by ``jsonload``'s own scanner).
HEAVY = (
    "asyncio", "anyio", "trio", "argparse", "socket", "shutil", "threading", "shlex", "ctypes",
    "json",
)


class Args(NamedTuple):
    """The options of a ``repeatr run`` this path covers."""

    file: str
    quiet: bool = False
    ignore_job_exit: bool = False
    no_memo: bool = False
    cache: str | None = None
    executor: str = "auto"
    format: str = "text"
    ware_disk: str | None = None
    output_dir: str | None = None

    def options(self) -> RunOptions:
        """The run's options, built as the full CLI builds them (``RunOptions.of_command``)."""
        from repeatr.runner.run import RunOptions

        return RunOptions.of_command(
            state_root(self.cache), executor=self.executor, no_memo=self.no_memo,
            ware_disk=self.ware_disk, output_dir=self.output_dir,
        )


class _Cancel(Exception):
    """A signal arrived: unwind, then exit 8."""


def parse(argv: list[str]) -> Args | str:
    """``argv`` as :class:`Args`, or why this path does not take it."""
    scanned = scan_run(argv, _VALUED, _FLAGS)
    if isinstance(scanned, str):
        return scanned
    opts, flags, files = scanned
    if len(files) != 1:
        return "not one formula"
    from repeatr.cli.output import ALIASES, Format

    fmt = opts.get("--format", "text")
    if fmt not in {f.value for f in Format} and fmt not in ALIASES:
        return f"--format {fmt}"
    executor = opts.get("--executor", "auto")
    if executor not in _EXECUTORS:
        return f"executor {executor}"
    return Args(
        file=files[0],
        quiet="--quiet" in flags,
        ignore_job_exit="--ignore-job-exit" in flags,
        no_memo="--no-memo" in flags,
        cache=opts.get("--cache"),
        executor=executor,
        format=fmt,
        ware_disk=opts.get("--ware-disk-limit"),
        output_dir=opts.get("--output-dir"),
    )


def _trace(what: str) -> None:
    path = os.environ.get("REPEATR_SINGLE_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(what + "\n")


def lean_run(argv: list[str], server: ServerProcess | None) -> int | None:
    """Run ``argv`` (``run FILE ...``) here, and its exit status; None: the full CLI's."""
    if os.environ.get("REPEATR_SINGLE") == "0":
        return None
    if os.environ.get("REPEATR_DASK") or server is None or os.geteuid() != 0:
        _trace("full: not this host or invocation")
        return None
    args = parse(argv)
    if isinstance(args, str):
        _trace(f"full: {args}")
        return None
    try:
        if not stat.S_ISREG(os.stat(args.file).st_mode):
            _trace("full: not a regular file")
            return None
    except OSError:
        _trace("full: cannot stat the formula")
        return None
    try:
        decided = plan(args)
    except Exception as exc:  # the full path reports it (an internal error, exit 2)
        _trace(f"full: unexpected {exc!r}")
        return None
    if isinstance(decided, str):
        _trace(f"full: {decided}")
        return None
    code = decided.run(server)
    if os.environ.get("REPEATR_SINGLE_TRACE"):
        import sys

        heavy = [m for m in HEAVY if m in sys.modules]
        _trace(f"lean: imported {' '.join(heavy) or 'none of ' + ', '.join(HEAVY)}")
    return code


class _Buffered:
    """What ``prepare`` and the choice report before the path is decided: replayed, or dropped."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def events(self) -> RunnerEvents:
        from repeatr.runner.run import RunnerEvents

        return RunnerEvents(
            log=lambda m: self.lines.append(("log", m)),
            warn=lambda m: self.lines.append(("warn", m)),
        )

    def replay(self, events: RunnerEvents) -> None:
        for kind, message in self.lines:
            (events.warn if kind == "warn" else events.log)(message)


def plan(args: Args) -> Lean | str:
    """The run, decided (reads only: the formula, the memo store, the cache's shelves),
    or why the full path takes it."""
    from repeatr.runner.run import choose_executor, prepare

    options = args.options()
    buffered = _Buffered()
    early = buffered.events()
    try:
        prepared = prepare(args.file, options, early)
    except RepeatrError:
        return "the formula does not load"
    if prepared.hit is not None:
        return Lean(args, options, prepared, buffered)
    loaded = prepared.loaded
    assert loaded is not None
    try:
        name = choose_executor(options.executor, loaded, early)
    except RepeatrError:
        return "no executor"
    if name not in ("ns", "chroot"):
        return f"executor {name}"
    from repeatr.model.defaults import apply_defaults
    from repeatr.model.wareid import WareID

    try:
        frm = apply_defaults(loaded.formula)
    except RepeatrError:
        return "the formula's defaults"
    if frm.action.network == "bridge":
        return "a bridge network"
    from repeatr.cache.layout import Layout

    layout = Layout(options.state.absolute())
    for source in frm.input_sources().values():
        if isinstance(source, WareID):
            if source.is_empty:
                return "an empty ware input"
            shelf = layout.shelf(source)
            if os.path.islink(shelf) or not os.path.exists(shelf):
                return "an input not in the cache"
            if not os.path.isfile(layout.record(source)):
                return "a shelf without its record"
    save_urls = loaded.context.save_urls if loaded.context is not None else {}
    for url in save_urls.values():
        if not url.startswith(("file://", "ca+file://")):
            return "an output saved to a remote warehouse"
    return Lean(args, options, prepared, buffered, executor=name, frm=frm)


def _check() -> None:
    """Raise if a signal arrived (the handlers only record it while this path runs)."""
    name = pending_signal()
    if name is not None:
        raise _Cancel(name)


def _wait_fd(fd: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000))))


class Lean:
    """One decided run (:func:`plan`); :meth:`run` does it and returns the exit status."""

    def __init__(
        self,
        args: Args,
        options: RunOptions,
        prepared: Prepared,
        buffered: _Buffered,
        *,
        executor: str = "",
        frm: Formula | None = None,
    ) -> None:
        self.args = args
        self.options = options
        self.prepared = prepared
        self.buffered = buffered
        self.executor_name = executor
        self.frm = frm

    def run(self, process: ServerProcess) -> int:
        from repeatr.cli.events import print_record, runner_events
        from repeatr.cli.output import Format, Reporter
        from repeatr.executors.server import BlockingServer
        from repeatr.runner.run import answered

        out = Reporter(Format(self.args.format), quiet=self.args.quiet)
        events = runner_events(out)

        def record(record_json: bytes) -> None:
            out.close()
            print_record(out, record_json)

        events.record = record
        self.buffered.replay(events)
        resume_gc()
        server = BlockingServer(process)
        try:
            if self.prepared.hit is not None:
                answered(self.prepared, self.options, events)
                return 0
            code = self._execute(server, events, out)
            if code != 0:
                out.log(f"the job exited {code}", level="warning")
            return 0 if code == 0 or self.args.ignore_job_exit else int(Category.JOB_FAILED)
        except RepeatrError as err:
            out.error(err)
            return err.exit_code
        except KeyboardInterrupt as interrupt:  # one that landed before the signals were ours
            cancelled = Cancelled(f"cancelled by {str(interrupt) or 'SIGINT'}")
            out.error(cancelled)
            return cancelled.exit_code
        except Exception as exc:  # as repeatr.cli.main.main: an internal error, exit 2
            import sys
            import traceback

            traceback.print_exc(file=sys.stderr)
            internal = RepeatrError(
                f"internal error: {exc!r} (please report this with the traceback)"
            )
            out.error(internal)
            return internal.exit_code
        finally:
            out.close()
            server.close()

    def _execute(self, server: BlockingServer, events: RunnerEvents, out: Reporter) -> int:
        """The run, its signals recorded and checked (see the module doc): the job's exit code."""
        import signal

        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        set_in_loop(True)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            _check()
            return self._steps(server, events, wake_r)
        except _Cancel as cancel:
            out.log(f"{cancel}: cancelling the run, cleaning up")
            raise Cancelled(f"cancelled by {cancel}") from None
        finally:
            signal.set_wakeup_fd(old_wakeup)
            set_in_loop(False)
            os.close(wake_r)
            os.close(wake_w)

    def _steps(self, server: BlockingServer, events: RunnerEvents, wake: int) -> int:
        from repeatr import workdir as workdirs
        from repeatr.cache import Cache
        from repeatr.model.runrecord import start_record
        from repeatr.runner.run import make_executor, publish
        from repeatr.runner.steps import (
            NetSettings,
            collect_dead,
            final_record,
            network_policy,
            pack_output,
            removal_warning,
            report_dead,
            work_and_job,
        )

        prepared, options, frm = self.prepared, self.options, self.frm
        loaded = prepared.loaded
        assert loaded is not None and frm is not None
        from repeatr.memo import MemoStore
        from repeatr.model.formula import Context
        from repeatr.model.wareid import WareID

        memo = MemoStore(options.state)

        def finished(rec: RunRecord) -> None:
            publish(rec, prepared, options, events, memo)

        ev = events.for_supervisor(finished)
        executor = make_executor(self.executor_name, events)
        assert isinstance(executor, _helper_executor())
        context = loaded.context or Context()
        started = start_record(prepared.formula_id, hostname=os.uname().nodename)
        caps = executor.known_capabilities()
        hostname = frm.action.hostname or (started.guid if caps.hostname else "")
        network = network_policy(frm.action.network, caps.networks, executor.name, ev)
        cache = Cache(options.state, on_wait=events.log, ware_disk=options.ware_disk)
        report_dead(*collect_dead(cache.root, NetSettings()), ev)
        _check()
        work: Path | None = None
        try:
            with contextlib.ExitStack() as held:
                lowers: dict[str, str] = {}
                for path, source in frm.input_sources().items():
                    if isinstance(source, WareID):  # not a host mount
                        sources = context.fetch_urls.get(path, ())
                        shelf = cache.shelf(source, sources, checkpoint=_check)
                        lowers[path] = os.fspath(held.enter_context(shelf).path)
                _check()
                work, job = work_and_job(cache.root, started.guid, frm, lowers, network, None)
                job = _replace(job, hostname or None, tuple(sorted(frm.outputs or {})))
                results: dict[str, str] = {}

                def job_finished(result: JobResult, view: Path) -> RunRecord:
                    for path, spec in sorted((frm.outputs or {}).items()):
                        results[path] = pack_output(
                            path, spec.packtype, spec.pack_filters(), context=context,
                            view=view, ev=ev, cache=None, keep=frozenset(), checkpoint=_check,
                        )
                    rec = final_record(
                        started, result, results, frm=frm, executor=str(executor.name),
                        caps=caps, network=network, address="", ev=ev,
                    )
                    ev.finished(rec)
                    return rec

                rec = _run_job(server, executor, job, ev.output, job_finished, wake)
        finally:
            if work is not None:
                left = workdirs.remove(work)
                if left:
                    ev.log(removal_warning(work, left))
        return rec.exit_code


def _helper_executor() -> type[HelperExecutor]:
    from repeatr.executors.helper import HelperExecutor

    return HelperExecutor


def _replace(job: JobSpec, hostname: str | None, outputs: tuple[str, ...]) -> JobSpec:
    import msgspec

    return msgspec.structs.replace(job, hostname=hostname, outputs=outputs, tty=None)


def _terminate(helper: Helper, timeout: float) -> None:
    """SIGTERM the helper (it kills the job and cleans up), then SIGKILL; wait for it."""
    import signal

    if not helper.exited():
        helper.send_signal(signal.SIGTERM)
        _wait_fd(helper.pidfd, timeout / 2)
    if not helper.exited():
        helper.send_signal(signal.SIGKILL)
        _wait_fd(helper.pidfd, timeout / 2)


def _run_job(
    server: BlockingServer,
    executor: HelperExecutor,
    job: JobSpec,
    on_output: Callable[[str, bytes], None],
    on_exit: Callable[[JobResult, Path], RunRecord],
    wake: int,
) -> RunRecord:
    """``HelperExecutor.run``, blocking: fork a helper, drive its conversation
    (:func:`_drive`), and on the job's exit call ``on_exit`` (pack, record) before ``Done``."""
    from repeatr.executors.conversation import JobPipes

    executor.check_job(job)
    spec = executor.spec(job)
    pipes = JobPipes()
    try:
        try:
            helper = server.fork(*pipes.child_fds(), last=True)
        finally:
            pipes.forked()
        try:
            return _drive(helper, executor, job, spec, pipes, on_output, on_exit, wake)
        except BaseException:
            _terminate(helper, executor.kill_timeout)
            raise
        finally:
            helper.close()
    finally:
        pipes.close()


def _packed(
    helper: Helper, spec: Spec, result: JobResult, on_exit: Callable[[JobResult, Path], RunRecord]
) -> RunRecord:
    """``on_exit`` (pack, record) on the exited job's tree, held by a descriptor."""
    from repeatr.linux.procroot import view_of

    try:
        with view_of(helper.pid, helper.pidfd, spec.root) as view:
            return on_exit(result, Path(view))
    except ProcessLookupError as exc:
        raise ExecutorError("the sandbox helper exited before the outputs were packed") from exc


def _drive(
    helper: Helper,
    executor: HelperExecutor,
    job: JobSpec,
    spec: Spec,
    pipes: JobPipes,
    on_output: Callable[[str, bytes], None],
    on_exit: Callable[[JobResult, Path], RunRecord],
    wake: int,
) -> RunRecord:
    """The job's :class:`~repeatr.executors.conversation.Conversation`, its bytes moved
    by ``poll``: the control socket, the job's pipes, the signals' wake-up fd."""
    from repeatr.executors.conversation import Conversation, JobExited

    conversation = Conversation(job.argv, helper.pid)
    control = helper.control
    control.setblocking(True)
    control.sendall(conversation.start(spec))
    control.setblocking(False)
    poller = select.poll()
    for fd in (control.fileno(), *pipes.fds, wake):
        poller.register(fd, select.POLLIN)
    rec: RunRecord | None = None
    deadline: float | None = None  # for the helper's exit, once it has said its last

    def pump(fd: int, *, drain: bool = False) -> None:
        """Deliver what the pipe ``fd`` has (``drain``: all it holds); at its end, drop it."""
        for name, line in pipes.drain(fd) if drain else pipes.read(fd):
            on_output(name, line)
        if fd not in pipes.open:
            poller.unregister(fd)

    while not (deadline is not None and helper.exited() and not pipes.open):
        timeout_ms = -1  # until something happens; once the helper has exited, the pipes' ends
        if deadline is not None and not helper.exited():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ExecutorError("the sandbox helper did not exit after the job")
            timeout_ms = max(1, int(left * 1000))
        for fd, _ev in poller.poll(timeout_ms):
            if fd == wake:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 64)
                _check()
            elif fd == helper.pidfd:
                poller.unregister(fd)  # exited: the pipes' ends are what is left
            elif fd in pipes.open:
                pump(fd)
            elif fd == control.fileno() and deadline is None:
                try:
                    chunk = control.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                for event in conversation.receive(chunk):
                    if isinstance(event, JobExited):
                        for pipe in pipes.fds:  # what the job wrote, before its record
                            if pipe in pipes.open:
                                pump(pipe, drain=True)
                        rec = _packed(helper, spec, event.result, on_exit)
                        control.setblocking(True)
                        control.sendall(conversation.done())
                        control.setblocking(False)
                if conversation.over:
                    poller.unregister(fd)
                    deadline = time.monotonic() + executor.kill_timeout
                    poller.register(helper.pidfd, select.POLLIN)
        if deadline is not None:
            _check()
    conversation.outcome()  # raises what the helper reported
    assert rec is not None
    return rec
