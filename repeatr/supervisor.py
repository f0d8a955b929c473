"""One run: fetch -> assemble -> launch -> pack -> teardown, under structured concurrency.

``run_formula`` is the whole life of a run. Every resource it takes is held
by an ``AsyncExitStack`` in the order taken, so teardown happens in reverse
on every path: success, a failed job, a failed step, cancellation (Ctrl-C,
SIGTERM, SIGHUP; the CLI turns those into cancelling this scope). Teardown
awaits in shielded scopes, so a second Ctrl-C does not cut it short.

- Inputs are fetched and unpacked into the cache in parallel; each shelf is
  held "in use" until the run ends, so ``cache gc`` never removes it.
- The filesystem is a list of mount operations (``repeatr.assemble``): an
  overlay per ware input (the shelf is the read-only lower, the writable
  upper lives in the run's work dir, under ``rw/``: ``limits.disk`` is a
  filesystem of that size there), a bind per ``mount:`` input, /proc,
  /dev, then the cradle's dirs. The executor executes them in a private
  mount namespace, so they vanish with it.
- Outputs are packed in parallel while the container's mounts still exist
  (the executor's ``on_finished`` hook), then saved to the context's
  ``saveUrls`` (and those in ``keep_outputs`` put into the cache, for the
  runs that read them next). The record is final there and reported at once
  (``RunEvents.finished``); the executor's teardown and ours follow.
- The work dir is named by its owner; a run killed by SIGKILL leaves one that
  the next run (or ``repeatr gc``) removes (``repeatr.workdir``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec

from repeatr import workdir as workdirs
from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Bind, Mkdir, Op, Overlay
from repeatr.cache import Cache
from repeatr.errors import (
    AssemblyError,
    Category,
    DiskFull,
    ExecutorError,
    FilesetError,
    RepeatrError,
    UsageError,
    collapse,
    is_no_space,
)
from repeatr.executors.base import Executor, JobResult, JobSpec, OutputCallback
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from repeatr.linux import libc
from repeatr.model import policy
from repeatr.model.defaults import apply_defaults
from repeatr.model.formula import Context, Formula, FormulaFile, HostMount
from repeatr.model.formula_id import formula_id
from repeatr.model.runrecord import RunRecord, start_record
from repeatr.model.wareid import WareID

#: How long teardown may take before we give up on a step (it then logs and goes on).
TEARDOWN_TIMEOUT = 30.0

# /usr/include/linux/openat2.h
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08


def _no_debug(_msg: str) -> None:
    pass


class RunEvents(msgspec.Struct):
    """Where a run reports what happens; the CLI passes its own callbacks."""

    log: Callable[[str], None] = lambda _msg: None
    #: Left out: debug lines that take work to build are not built.
    debug: Callable[[str], None] = _no_debug
    output: Callable[[str, bytes], None] = lambda _stream, _line: None
    progress: Callable[[str, int], None] = lambda _phase, _done: None
    #: The run record, as soon as it is known: before teardown, which may still fail.
    finished: Callable[[RunRecord], None] = lambda _record: None


    @property
    def debugging(self) -> bool:
        return self.debug is not _no_debug


class RunOutcome(msgspec.Struct):
    record: RunRecord
    job: JobResult
    fetched: dict[str, bool] = msgspec.field(default_factory=dict)  # input path -> unpacked by us


async def run_formula(
    loaded: FormulaFile,
    *,
    executor: Executor,
    cache: Cache,
    events: RunEvents | None = None,
    net: NetSettings | None = None,
    tty: int | None = None,
    collect_dead: bool = True,
    known_id: str = "",
    keep_outputs: frozenset[str] = frozenset(),
) -> RunOutcome:
    """Run one formula with ``executor``; the record of what it produced.

    ``tty``: a terminal for an interactive job (``repeatr twerk``).
    ``collect_dead``: first reclaim what runs whose repeatr died left
    (:func:`collect_dead_runs`); a batch does that once, for all its formulas.
    ``known_id``: the formula's ID if the caller computed it already (the
    runner did, for the memo store); empty: computed here.
    ``keep_outputs``: output paths to put into the cache as they are packed
    (:meth:`Cache.keep_output`), for runs that read them next (a graph's).
    """
    ev = events or RunEvents()
    frm = apply_defaults(loaded.formula)
    context = loaded.context or Context()
    # The record names the host that ran it, as the original's (os.Hostname).
    fid = known_id or formula_id(loaded.formula)
    record = start_record(fid, hostname=os.uname().nodename)
    caps = executor.known_capabilities()
    # The job's hostname: the formula's, else the run's guid, as the original's
    # executors set it (never the host's name, which would leak into the job).
    # An executor without a UTS namespace (chroot) shows the host's.
    hostname = frm.action.hostname or (record.guid if caps.hostname else "")
    network = _network_policy(frm.action.network, caps.networks, executor.name, ev)
    if collect_dead:
        await collect_dead_runs(cache.root, net or NetSettings(), ev)
    work: Path | None = None
    try:
        async with contextlib.AsyncExitStack() as held:
            # Inputs and the network do not depend on each other: prepare both at once.
            lowers: dict[str, str] = {}
            fetched: dict[str, bool] = {}
            att: Any = None

            async def inputs() -> None:
                got = await _fetch_inputs(frm, context, cache, held, ev)
                lowers.update(got[0])
                fetched.update(got[1])

            async def attach() -> None:
                nonlocal att
                att = await _attach_bridge(
                    frm, record.guid, hostname, net or NetSettings(), held, ev
                )

            async with _first_error(), anyio.create_task_group() as tg:
                tg.start_soon(inputs)
                if network is NetworkPolicy.BRIDGE:
                    tg.start_soon(attach)
            # One thread hop for the blocking part: the work dir, and the job in it
            # (dirs made, single-file wares copied, a bridged job's /etc files).
            # Shielded: a cancel landing meanwhile would drop the result and leak
            # the dir; once it returns, the finally below owns the dir.
            with anyio.CancelScope(shield=True):
                work, job = await anyio.to_thread.run_sync(
                    _work_and_job, cache.root, record.guid, frm, lowers, network, att
                )
            ev.debug(f"work dir {work}")
            job = msgspec.structs.replace(
                job,
                hostname=hostname or None,
                outputs=tuple(sorted(frm.outputs or {})),
                tty=tty,
            )
            if att is not None:
                job = msgspec.structs.replace(
                    job,
                    network=JobNetwork(
                        policy=network, netns=os.fspath(att.netns) if att.netns else None
                    ),
                )
            if ev.debugging:
                for op in executor.job_mounts(job):
                    ev.debug(f"mount: {op.describe()}")
                for step in job.cradle:
                    ev.debug(f"cradle: {step.describe()}")
            results: dict[str, str] = {}
            reported: list[RunRecord] = []

            def final(result: JobResult) -> RunRecord:
                if result.reason:
                    ev.log(f"the job was stopped: {result.reason}")
                limits = frm.action.limits
                return RunRecord(
                    guid=record.guid,
                    time=record.time,
                    formula_id=record.formula_id,
                    exit_code=result.exit_code,
                    results=results,
                    hostname=record.hostname,
                    executor=str(executor.name),
                    isolation=tuple(sorted(str(i) for i in caps.isolates)),
                    limits=limits.to_json() if limits is not None else None,
                    network=network,
                    address=str(att.address.ip) if att is not None and att.address else "",
                    stopped=result.reason or "",
                )

            async def job_finished(result: JobResult, view: Path) -> None:
                # The job has exited and its outputs are packed and saved: the
                # record is final. Report it now; the executor's own teardown
                # (the sandbox helper leaving its namespaces) and ours follow,
                # before run_formula returns, while whoever waited for the
                # record (a graph's next node) goes on.
                if frm.outputs:
                    results.update(
                        await _pack_outputs(frm, context, view, ev, cache, keep_outputs)
                    )
                reported.append(final(result))
                ev.finished(reported[0])

            if ev.debugging:
                ev.debug(f"executor {executor.name}: {shlex.join(job.argv)}")
            result = await executor.run(
                job, on_output=_async_output(ev.output), on_finished=job_finished
            )
            if not reported:  # an executor that does not call on_finished
                reported.append(final(result))
                ev.finished(reported[0])
            record = reported[0]
    finally:
        if work is not None:
            await _remove_work_dir(work, ev)
    return RunOutcome(record, result, fetched)


async def _remove_work_dir(work: Path, ev: RunEvents) -> None:
    """Remove the run's work dir (shielded: also when the run is cancelled); log what is left."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(TEARDOWN_TIMEOUT):
        left = await anyio.to_thread.run_sync(workdirs.remove, work)
        if left:
            more = f" (and {len(left) - 3} more)" if len(left) > 3 else ""
            ev.log(
                f"could not remove the work dir {work}: {'; '.join(left[:3])}{more}; "
                "`repeatr gc` removes it once this process has exited"
            )


class NetSettings(msgspec.Struct, frozen=True):
    """Host-side network settings (not part of a formula): which bridge, subnet, state."""

    network: Any = None  # repeatr.net.config.Network; None: the default (repeatr0)
    host: Any = None  # repeatr.net.config.NetHost; None: the default (/run/repeatr/net)

    def resolved(self) -> tuple[Any, Any]:
        from repeatr.net.config import DEFAULT_HOST, DEFAULT_NETWORK

        return self.network or DEFAULT_NETWORK, self.host or DEFAULT_HOST


def _network_policy(
    asked: str, supported: frozenset[NetworkPolicy], executor: str, ev: RunEvents
) -> NetworkPolicy:
    """The network the job gets. Absent means ``none`` where the executor can give it."""
    if asked:
        policy = NetworkPolicy.parse(asked)
        if policy is NetworkPolicy.BRIDGE and NetworkPolicy.NONE in supported:
            return policy  # a prepared namespace, joined by the executor
        if policy not in supported:
            raise ExecutorError(
                f"executor {executor} cannot give the job network {asked!r}",
                hint=f"it supports {', '.join(sorted(supported))}; ns, runc, crun and gvisor "
                "support none, host and bridge",
            )
        return policy
    if NetworkPolicy.NONE in supported:
        return NetworkPolicy.NONE
    ev.log(f"executor {executor} has no network isolation: the job uses the host's network")
    return NetworkPolicy.HOST


async def collect_dead_runs(state: Path, net: NetSettings, ev: RunEvents) -> None:
    """Reclaim what runs whose repeatr process died (SIGKILL, crash) left behind.

    Their work dirs under ``state``, their cgroups, and the leases, veths and
    namespaces of bridged ones (any run cleans up after bridged runs, not only
    bridged ones). One thread hop for the three: each is a few listings of
    sysfs, /proc and ``state``.
    """
    from repeatr.linux import cgroups
    from repeatr.net.gc import GCReport, collect

    _, host = net.resolved()

    def collect_all() -> tuple[list[Path], GCReport]:
        reaped = workdirs.reap_stale(state)
        cgroups.gc()
        return reaped, collect(host)

    reaped, report = await anyio.to_thread.run_sync(collect_all)
    for path in reaped:
        ev.log(f"removed the work dir of a dead run: {path}")
    if report.runs or report.links or report.namespaces or report.leases:
        ev.log(
            f"reclaimed the network of dead runs: {len(report.leases)} leases, "
            f"{len(report.links)} veths, {len(report.namespaces)} namespaces"
        )
    for failure in report.failures:
        ev.log(f"network gc: {failure}")


async def _attach_bridge(
    frm: Formula,
    run_id: str,
    hostname: str,
    net: NetSettings,
    held: contextlib.AsyncExitStack,
    ev: RunEvents,
) -> Any:
    from repeatr.net.setup import prepare, teardown

    network, host = net.resolved()
    att = await prepare(
        "bridge",
        run_id,
        hostname,
        network=network,
        host=host,
        nameservers=frm.action.nameservers,
    )
    held.push_async_callback(teardown, att)
    ev.debug(f"network: bridge {network.bridge}, address {att.address}, netns {att.netns}")
    return att


def _dns_binds(att: Any, work: Path) -> list[Op]:
    """/etc/resolv.conf and /etc/hosts for a bridged job, read-only binds of files we write."""
    etc = work / "etc"
    etc.mkdir()
    binds: list[Op] = []
    for name, text in (("resolv.conf", att.resolv_conf), ("hosts", att.hosts)):
        (etc / name).write_text(text)
        binds.append(Bind(os.fspath(etc / name), f"/etc/{name}", ro=True, recursive=False))
    return binds


@contextlib.asynccontextmanager
async def _first_error() -> AsyncIterator[None]:
    """Parallel steps report their first real error, not an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        raise collapse(group) from None


def _async_output(cb: Callable[[str, bytes], None]) -> OutputCallback:
    async def on_output(stream: str, line: bytes) -> None:
        cb(stream, line)

    return on_output


async def _fetch_inputs(
    frm: Formula,
    context: Context,
    cache: Cache,
    held: contextlib.AsyncExitStack,
    ev: RunEvents,
) -> tuple[dict[str, str], dict[str, bool]]:
    """Every ware input's shelf, fetched in parallel and held until the run ends."""
    wares = {
        path: source
        for path, source in frm.input_sources().items()
        if isinstance(source, WareID)
    }
    shelves: dict[str, str] = {}
    fetched: dict[str, bool] = {}

    async def fetch(path: str, ware: WareID) -> None:
        if ware.is_empty:
            raise UsageError(f"formula.inputs[{path!r}]: {ware} is the empty ware")
        sources = context.fetch_urls.get(path, ())
        handle = await held.enter_async_context(
            cache.open_shelf(ware, sources, progress=lambda n: ev.progress("fetch", n))
        )
        shelves[path] = os.fspath(handle.path)
        fetched[path] = handle.unpacked
        ev.debug(f"input {path}: {ware} {'unpacked' if handle.unpacked else 'cached'}")

    async with _first_error(), anyio.create_task_group() as tg:
        for path, ware in wares.items():
            tg.start_soon(fetch, path, ware)
    return shelves, fetched


def _work_and_job(
    root: Path,
    guid: str,
    frm: Formula,
    lowers: dict[str, str],
    network: NetworkPolicy,
    att: Any,
) -> tuple[Path, JobSpec]:
    """The run's work dir, made, and the job in it (blocking: run in a worker thread).

    A bridged job (``att``) gets its /etc files too. What fails removes the
    dir again: the caller owns it only once this returns.
    """
    work = workdirs.create(root, guid)
    try:
        job = _job_spec(frm, work, lowers, network)
        if att is not None:
            job = msgspec.structs.replace(job, mounts=(*job.mounts, *_dns_binds(att, work)))
    except BaseException as exc:
        workdirs.remove(work)
        if isinstance(exc, OSError) and is_no_space(exc):
            raise DiskFull.of(exc, work, "prepare the work dir") from exc
        raise
    return work, job


def _job_spec(
    frm: Formula, work: Path, lowers: dict[str, str], network: NetworkPolicy
) -> JobSpec:
    """The job: mounts in formula order (the planner sorts parents first), cradle, user."""
    action = frm.action
    user = action.userinfo
    assert user is not None and user.uid is not None and user.gid is not None  # defaults applied
    mounts: list[Op] = []
    for index, (path, source) in enumerate(sorted(frm.input_sources().items())):
        if isinstance(source, HostMount):
            mounts.append(Bind(source.host_path, path, ro=not source.writable))
            continue
        if os.path.isfile(lowers[path]):
            # A single-file ware: overlayfs mounts only directories, so the job
            # gets a private copy (rio's placers copy files too), writable.
            # (Outside rw/: the helper mounts limits.disk's filesystem there.)
            if path == "/":
                raise AssemblyError(
                    f"formula.inputs['/']: {frm.inputs['/'] if frm.inputs else ''} is a"
                    " single-file ware; the root must be a directory"
                )
            copy_dir = work / "files" / str(index)
            copy_dir.mkdir(parents=True, exist_ok=True)
            copy = _copy_file(lowers[path], copy_dir / "file")
            mounts.append(Bind(os.fspath(copy), path, ro=False, recursive=False))
            continue
        # Every writable layer under rw/ (JobSpec.rw): limits.disk is a
        # filesystem of that size mounted there by the sandbox helper.
        rw = work / "rw"
        layer = rw / "layers" / str(index)
        upper, scratch = (rw / "upper", rw / "work") if path == "/" else (
            layer / "upper", layer / "work"
        )
        for d in (upper.parent, scratch):
            d.mkdir(parents=True, exist_ok=True)
        mounts.append(Overlay((lowers[path],), path, os.fspath(upper), os.fspath(scratch)))
    mounts.extend(system_mounts())
    cradle: tuple[Mkdir, ...] = ()
    if action.cradle != "disable":
        cradle = cradle_steps(
            cwd=action.cwd or "/", home=user.homedir or "/", uid=user.uid, gid=user.gid
        )
    return JobSpec(
        argv=tuple(action.exec),
        env=tuple(sorted((action.env or {}).items())),
        workdir=work,
        mounts=tuple(mounts),
        cradle=cradle,
        cwd=action.cwd or "/",
        uid=user.uid,
        gid=user.gid,
        hostname=action.hostname or None,
        capabilities=frozenset(policy.capabilities(policy.resolve(action.policy))),
        seccomp=policy.seccomp(policy.resolve(action.policy)),
        network=JobNetwork(policy=network),
        limits=action.limits,
    )


def _copy_file(src: str, dest: Path) -> Path:
    """Copy a shelf's file with its mode, owner and mtime (what the ware says)."""
    import shutil

    shutil.copy2(src, dest, follow_symlinks=False)
    st = os.lstat(src)
    os.chown(dest, st.st_uid, st.st_gid)
    os.chmod(dest, st.st_mode & 0o7777)  # chown cleared any setid bits
    os.utime(dest, ns=(st.st_mtime_ns, st.st_mtime_ns))
    return dest


async def _pack_outputs(
    frm: Formula,
    context: Context,
    view: Path,
    ev: RunEvents,
    cache: Cache,
    keep: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Pack every output (in parallel), save it where the context says; path -> ware ID.

    Those in ``keep`` that are saved also go into the cache, unpacked from the
    tree just packed (the runs reading them find a shelf: no fetch, no unpack). That
    is a shortcut, not the run's result: if it fails, the output is only
    saved, and the message says so.
    """
    from repeatr.fileset.pack import pack_dir
    from repeatr.warehouse import redact, warehouse_for

    results: dict[str, str] = {}

    def progress(done: int) -> None:
        # In the worker thread: a cancelled run (Ctrl-C, SIGTERM) stops its
        # packs here, every 8 MiB, instead of waiting for them to finish.
        anyio.from_thread.check_cancelled()
        ev.progress("pack", done)

    def pack_one(path: str, packtype: str, filters: Any) -> str:
        where = _output_dir(view, path)
        target = context.save_urls.get(path)
        if target is None:
            ware = pack_dir(where, None, filters=filters, packtype=packtype, progress=progress)
        else:
            # The checkpoint lets a cancel stop an upload to an HTTP warehouse too.
            warehouse = warehouse_for(target, checkpoint=anyio.from_thread.check_cancelled)
            with warehouse.start_save() as session:
                ware = pack_dir(
                    where, session.file, filters=filters, packtype=packtype, progress=progress
                )
                if not ware.is_empty:
                    session.commit(ware)
                    ev.log(f"saved output {path} as {ware} to {redact(target)}")
        if path in keep and target is not None and not ware.is_empty:
            # Only a saved output: the cache is a shortcut to what a reader could
            # fetch, never the only copy. In this thread, the tree just read: no
            # hop, and warm in the page cache.
            try:
                cache.keep_output(
                    ware, where, filters, checkpoint=anyio.from_thread.check_cancelled
                )
            except (RepeatrError, OSError) as exc:
                ev.log(f"output {path} saved but not cached (its readers fetch it): {exc}")
        return str(ware)

    async def pack(path: str) -> None:
        assert frm.outputs is not None
        out = frm.outputs[path]
        try:
            results[path] = await anyio.to_thread.run_sync(
                pack_one, path, out.packtype, out.pack_filters()
            )
        except FilesetError as exc:
            if exc.category is not Category.PACK_INVALID or exc.message.startswith("output "):
                raise
            # Name the output: the path in the message is inside the run's work dir.
            raise FilesetError(
                f"output {path}: {exc.message}", category=exc.category, hint=exc.hint
            ) from exc

    async with _first_error(), anyio.create_task_group() as tg:
        for path in sorted(frm.outputs or {}):
            tg.start_soon(pack, path)
    return results


def _output_dir(view: Path, path: str) -> Path:
    """``view/path``, refused if any component is a symlink (it could point out of the root)."""
    rel = path.strip("/")
    if not rel:
        return view
    root_fd = os.open(view, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = libc.openat2(
            root_fd,
            rel,
            os.O_PATH,
            _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS,
        )
        os.close(fd)
    except FileNotFoundError:
        pass  # a missing output packs to the empty ware
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            raise FilesetError(
                f"output {path}: a component of the path is a symlink; outputs must be real paths",
                category=Category.PACK_INVALID,
            ) from exc
        raise FilesetError(
            f"output {path}: {exc.strerror}", category=Category.PACK_INVALID
        ) from exc
    finally:
        os.close(root_fd)
    return view / rel
