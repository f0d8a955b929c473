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
from repeatr.cache import Cache
from repeatr.errors import UsageError, collapse
from repeatr.executors.base import Executor, JobResult, OutputCallback
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from repeatr.model.defaults import apply_defaults
from repeatr.model.formula import Context, Formula, FormulaFile
from repeatr.model.formula_id import formula_id
from repeatr.model.runrecord import RunRecord, start_record
from repeatr.model.wareid import WareID
from repeatr.runner.steps import (
    NetSettings,
    RunEvents,
    collect_dead,
    final_record,
    network_policy,
    pack_output,
    removal_warning,
    report_dead,
    work_and_job,
)

__all__ = ["NetSettings", "RunEvents", "RunOutcome", "collect_dead_runs", "run_formula"]

#: How long teardown may take before we give up on a step (it then logs and goes on).
TEARDOWN_TIMEOUT = 30.0


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
    network = network_policy(frm.action.network, caps.networks, executor.name, ev)
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
                    work_and_job, cache.root, record.guid, frm, lowers, network, att
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
                return final_record(
                    record, result, results, frm=frm, executor=str(executor.name), caps=caps,
                    network=network,
                    address=str(att.address.ip) if att is not None and att.address else "",
                    ev=ev,
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
            ev.log(removal_warning(work, left))


async def collect_dead_runs(state: Path, net: NetSettings, ev: RunEvents) -> None:
    """Reclaim what runs whose repeatr process died (SIGKILL, crash) left behind.

    Their work dirs under ``state``, their cgroups, and the leases, veths and
    namespaces of bridged ones (any run cleans up after bridged runs, not only
    bridged ones). One thread hop for the three: each is a few listings of
    sysfs, /proc and ``state``.
    """
    reaped, report = await anyio.to_thread.run_sync(collect_dead, state, net)
    report_dead(reaped, report, ev)

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
    results: dict[str, str] = {}

    def progress_checkpoint() -> None:
        # In the worker thread: a cancelled run (Ctrl-C, SIGTERM) stops its
        # packs here, every 8 MiB, instead of waiting for them to finish.
        anyio.from_thread.check_cancelled()

    async def pack(path: str) -> None:
        assert frm.outputs is not None
        out = frm.outputs[path]
        results[path] = await anyio.to_thread.run_sync(
            lambda: pack_output(
                path, out.packtype, out.pack_filters(), context=context, view=view, ev=ev,
                cache=cache, keep=keep, checkpoint=progress_checkpoint,
            )
        )

    async with _first_error(), anyio.create_task_group() as tg:
        for path in sorted(frm.outputs or {}):
            tg.start_soon(pack, path)
    return results
