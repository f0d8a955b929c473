"""The blocking steps of one run, shared by its two drivers.

:func:`repeatr.supervisor.run_formula` (async, under anyio: batches, graphs,
``check``, ``twerk`` and any run the lean path does not take) and
:mod:`repeatr.runner.single` (a single ``repeatr run`` driven synchronously,
without an event loop) run a formula through the same steps, defined here:
the network policy, the work dir and the job spec in it, reclaiming what dead
runs left, packing and saving one output, the final run record. Nothing here
imports anyio: each step blocks, and the async driver runs it in a worker
thread.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from repeatr import workdir as workdirs
from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Bind, Mkdir, Op, Overlay
from repeatr.errors import (
    AssemblyError,
    Category,
    DiskFull,
    ExecutorError,
    FilesetError,
    RepeatrError,
    is_no_space,
)
from repeatr.executors.base import JobResult, JobSpec
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from repeatr.linux import libc
from repeatr.model import policy
from repeatr.model.formula import Context, Formula, HostMount
from repeatr.model.runrecord import RunRecord

if TYPE_CHECKING:
    from repeatr.cache import Cache
    from repeatr.executors.base import Capabilities
    from repeatr.model.filters import Filters
    from repeatr.net.gc import GCReport

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




class NetSettings(msgspec.Struct, frozen=True):
    """Host-side network settings (not part of a formula): which bridge, subnet, state."""

    network: Any = None  # repeatr.net.config.Network; None: the default (repeatr0)
    host: Any = None  # repeatr.net.config.NetHost; None: the default (/run/repeatr/net)

    def resolved(self) -> tuple[Any, Any]:
        from repeatr.net.config import DEFAULT_HOST, DEFAULT_NETWORK

        return self.network or DEFAULT_NETWORK, self.host or DEFAULT_HOST


def network_policy(
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




def dns_binds(att: Any, work: Path) -> list[Op]:
    """/etc/resolv.conf and /etc/hosts for a bridged job, read-only binds of files we write."""
    etc = work / "etc"
    etc.mkdir()
    binds: list[Op] = []
    for name, text in (("resolv.conf", att.resolv_conf), ("hosts", att.hosts)):
        (etc / name).write_text(text)
        binds.append(Bind(os.fspath(etc / name), f"/etc/{name}", ro=True, recursive=False))
    return binds




def work_and_job(
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
        job = job_spec(frm, work, lowers, network)
        if att is not None:
            job = msgspec.structs.replace(job, mounts=(*job.mounts, *dns_binds(att, work)))
    except BaseException as exc:
        workdirs.remove(work)
        if isinstance(exc, OSError) and is_no_space(exc):
            raise DiskFull.of(exc, work, "prepare the work dir") from exc
        raise
    return work, job


def job_spec(
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




def output_dir(view: Path, path: str) -> Path:
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


def collect_dead(state: Path, net: NetSettings) -> tuple[list[Path], GCReport]:
    """Reclaim what dead runs left (see ``repeatr.supervisor.collect_dead_runs``), blocking."""
    from repeatr.linux import cgroups
    from repeatr.net.gc import collect

    reaped = workdirs.reap_stale(state)
    cgroups.gc()
    return reaped, collect(net.host)  # None: the default host, not imported if idle


def report_dead(reaped: list[Path], report: GCReport, ev: RunEvents) -> None:
    """What :func:`collect_dead` reclaimed, as log lines."""
    for path in reaped:
        ev.log(f"removed the work dir of a dead run: {path}")
    if report.runs or report.links or report.namespaces or report.leases:
        ev.log(
            f"reclaimed the network of dead runs: {len(report.leases)} leases, "
            f"{len(report.links)} veths, {len(report.namespaces)} namespaces"
        )
    for failure in report.failures:
        ev.log(f"network gc: {failure}")


def removal_warning(work: Path, left: list[str]) -> str:
    """The log line for a work dir that could not be removed entirely."""
    more = f" (and {len(left) - 3} more)" if len(left) > 3 else ""
    return (
        f"could not remove the work dir {work}: {'; '.join(left[:3])}{more}; "
        "`repeatr gc` removes it once this process has exited"
    )


def pack_output(
    path: str,
    packtype: str,
    filters: Filters,
    *,
    context: Context,
    view: Path,
    ev: RunEvents,
    cache: Cache | None,
    keep: frozenset[str],
    checkpoint: Callable[[], None],
) -> str:
    """Pack one output from the job's root ``view``, save it where the context says;
    its ware ID. ``checkpoint`` is called every 8 MiB (and while uploading): what
    it raises (a cancellation) stops the pack."""
    from repeatr.fileset.pack import pack_dir
    from repeatr.warehouse import redact, warehouse_for

    def progress(done: int) -> None:
        checkpoint()
        ev.progress("pack", done)

    try:
        where = output_dir(view, path)
        target = context.save_urls.get(path)
        if target is None:
            ware = pack_dir(where, None, filters=filters, packtype=packtype, progress=progress)
        else:
            warehouse = warehouse_for(target, checkpoint=checkpoint)
            with warehouse.start_save() as session:
                ware = pack_dir(
                    where, session.file, filters=filters, packtype=packtype, progress=progress
                )
                if not ware.is_empty:
                    session.commit(ware)
                    ev.log(f"saved output {path} as {ware} to {redact(target)}")
    except FilesetError as exc:
        if exc.category is not Category.PACK_INVALID or exc.message.startswith("output "):
            raise
        # Name the output: the path in the message is inside the run's work dir.
        raise FilesetError(
            f"output {path}: {exc.message}", category=exc.category, hint=exc.hint
        ) from exc
    if path in keep and target is not None and not ware.is_empty and cache is not None:
        # Only a saved output: the cache is a shortcut to what a reader could
        # fetch, never the only copy. In this thread, the tree just read: no
        # hop, and warm in the page cache.
        try:
            cache.keep_output(ware, where, filters, checkpoint=checkpoint)
        except (RepeatrError, OSError) as exc:
            ev.log(f"output {path} saved but not cached (its readers fetch it): {exc}")
    return str(ware)


def final_record(
    started: RunRecord,
    result: JobResult,
    results: dict[str, str],
    *,
    frm: Formula,
    executor: str,
    caps: Capabilities,
    network: NetworkPolicy,
    address: str,
    ev: RunEvents,
) -> RunRecord:
    """The run record once the job has exited and its outputs are packed."""
    if result.reason:
        ev.log(f"the job was stopped: {result.reason}")
    limits = frm.action.limits
    return RunRecord(
        guid=started.guid,
        time=started.time,
        formula_id=started.formula_id,
        exit_code=result.exit_code,
        results=results,
        hostname=started.hostname,
        executor=executor,
        isolation=tuple(sorted(str(i) for i in caps.isolates)),
        limits=limits.to_json() if limits is not None else None,
        network=network,
        address=address,
        stopped=result.reason or "",
    )
