"""``run`` and ``gc``: run a formula; clean up after runs that died."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from repeatr.cli.output import Format, Reporter
from repeatr.errors import Category, DiskFull, RepeatrError, is_no_space

EXECUTORS = ("auto", "ns", "chroot", "runc", "crun", "gvisor")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run a formula and print its run record",
        description="Run FORMULA: fetch and unpack its inputs (once per host, into the\n"
        "cache), assemble the container filesystem, run the action, pack the\n"
        "outputs, save them to the context's saveUrls, and print the run record\n"
        "(formula ID, exit code, the ware ID of every output) on stdout.\n"
        "The job's stdout and stderr stream to stderr, prefixed 'out| ' / 'err| '.",
        epilog="exit status: 0 when the job exited 0; 20 when it exited non-zero (the\n"
        "record has its code; --ignore-job-exit gives 0 as the original did);\n"
        "otherwise repeatr's own error code (see repeatr --help).\n\n"
        "A formula run before in the same way (same formula ID and executor,\n"
        "exit code 0) returns its stored record at once; --no-memo runs it anyway.\n"
        "A formula with a mount: input (a host directory) is never memoized.\n\n"
        "FORMULA may be a pipe (/dev/stdin, <(...)); `repeatr run -- FORMULA`\n"
        "works as in the original's scripts.",
    )
    p.add_argument("formula", metavar="FORMULA", help="formula file (JSON), or a pipe")
    p.add_argument(
        "--executor", "-e", choices=EXECUTORS, default="auto",
        help="what runs the job (default: the best this host offers)",
    )
    p.add_argument("--no-memo", action="store_true", help="run even if a record is stored")
    p.add_argument(
        "--bridge", metavar="NAME", default=os.environ.get("REPEATR_BRIDGE"),
        help='host bridge for "network": "bridge" (env REPEATR_BRIDGE, default repeatr0)',
    )
    p.add_argument(
        "--subnet", metavar="CIDR", default=os.environ.get("REPEATR_SUBNET"),
        help="its IPv4 subnet (env REPEATR_SUBNET, default 10.213.0.0/16)",
    )
    p.add_argument(
        "--ignore-job-exit", action="store_true",
        help="exit 0 even when the job fails (the original's behaviour)",
    )
    p.add_argument(
        "--output-dir", metavar="DIR",
        help="when the job exits 0, also write DIR/record.json and, per output,"
        " DIR/<path with / as _>.ware_id (for make; see docs/make.md)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "gc",
        parents=[common],
        help="remove what dead runs left behind",
        description="Remove what runs that died (SIGKILL, a crash, a reboot) left: work\n"
        "dirs, cache temp dirs, and the IP leases, veths and network namespaces\n"
        "of bridged runs. Every run also does this when it starts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_gc)


def _state_root(args: argparse.Namespace) -> Path:
    from repeatr.cli.main import cache_root

    return Path(cache_root(args))


def _exit_status(exit_code: int, ignore_job_exit: bool) -> int:
    return 0 if exit_code == 0 or ignore_job_exit else int(Category.JOB_FAILED)


def cmd_run(args: argparse.Namespace, out: Reporter) -> int:
    # The memo hit path imports only the memo store (and, on a miss by file
    # content, the model): keep it so. Two keys lead to a stored record: the
    # formula file's bytes (no parsing at all) and the formula ID.
    from repeatr.memo import MemoStore, file_key, memo_key

    state = _state_root(args)
    memo = MemoStore(state)
    fast_key = file_key(args.formula, args.executor)
    if not args.no_memo and fast_key is not None and (stored := memo.get(fast_key)):
        out.debug("memo hit (formula file seen before)")
        _print_record(out, stored, args.output_dir)
        return 0

    from repeatr.cli.formula_cmds import warn_about
    from repeatr.model.formula import load_formula_file
    from repeatr.model.formula_id import formula_id

    loaded = load_formula_file(args.formula)
    warn_about(loaded.formula, out)
    fid = formula_id(loaded.formula)
    keys = [memo_key(fid, args.executor), *([fast_key] if fast_key else [])]
    if mounts := _host_mounts(loaded):
        # A host directory can change between runs: its record says nothing
        # about the next one. Never stored, so never replayed either.
        what = "is a host mount" if len(mounts) == 1 else "are host mounts"
        out.log(f"not memoized: {', '.join(mounts)} {what} (mount:), which can change")
        return _run(args, out, loaded, state, memo, [])
    if not args.no_memo and (stored := memo.get(keys[0])):
        # The formula ID leaves the context out: this file may save elsewhere.
        import json

        needs = _saved_files(loaded, json.loads(stored)["results"])
        if all(os.path.exists(p) for p in needs):
            out.debug(f"memo hit: {fid}")
            _remember(out, memo, keys[1:], stored, needs)
            _print_record(out, stored, args.output_dir)
            return 0
        out.debug(f"memo entry for {fid} skipped: a saved output is gone; running again")
    return _run(args, out, loaded, state, memo, keys)


def _host_mounts(loaded: Any) -> list[str]:
    """The formula's input paths that are host directories (``mount:ro:``/``mount:rw:``)."""
    from repeatr.model.formula import HostMount

    sources = loaded.formula.input_sources().items()
    return sorted(path for path, source in sources if isinstance(source, HostMount))


def _remember(
    out: Reporter, memo: Any, keys: list[str], record_json: bytes, needs: list[str]
) -> None:
    """Store the record under every key; a store that fails is a warning, never the run's end.

    The run is done and its record is about to be printed: a full state disk
    (or any other write failure) only means the next run will not be a hit.
    ``MemoStore.put`` leaves no partial entry behind.
    """
    for key in keys:
        try:
            memo.put(key, record_json, needs)
        except OSError as exc:
            out.log(
                f"could not remember this run (the next one runs again): cannot write"
                f" {exc.filename or memo.dir}: {exc.strerror or exc}",
                level="warning",
            )
            return


def _saved_files(loaded: Any, results: dict[str, str]) -> list[str]:
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


def _print_record(out: Reporter, record_json: bytes, output_dir: str | None = None) -> None:
    if out.format is Format.JSON:
        import json

        out.result("", record=json.loads(record_json))
    else:
        out.stdout.write(record_json.decode())
        out.stdout.flush()
    if output_dir is not None:
        _write_output_dir(Path(output_dir), record_json)


def _run(
    args: argparse.Namespace,
    out: Reporter,
    loaded: Any,
    state: Path,
    memo: Any,
    keys: list[str],
) -> int:
    from repeatr.cache import Cache
    from repeatr.cli.main import run_cancellable, ware_disk_limit
    from repeatr.executors.base import load
    from repeatr.model.runrecord import encode_pretty
    from repeatr.supervisor import run_formula

    executor = load(_choose(args.executor, loaded, out))(on_debug=out.debug)
    cache = Cache(state, on_wait=out.log, ware_disk=ware_disk_limit(args))

    def finished(record: Any) -> None:
        # Called as soon as the result is known, before teardown: a caller
        # reading stdout has the record while the veth is still being deleted.
        record_json = encode_pretty(record)
        if record.exit_code == 0:
            _remember(out, memo, keys, record_json, _saved_files(loaded, dict(record.results)))
        out.close()  # the packs' progress bars: the record goes to the same terminal
        _print_record(out, record_json, args.output_dir if record.exit_code == 0 else None)

    events = run_events(out)
    events.finished = finished

    async def run() -> Any:
        return await run_formula(
            loaded, executor=executor, cache=cache, events=events, net=_net_settings(args)
        )

    outcome = run_cancellable(run, out)
    if outcome.record.exit_code != 0:
        out.log(f"the job exited {outcome.record.exit_code}", level="warning")
    return _exit_status(outcome.record.exit_code, args.ignore_job_exit)


def run_events(out: Reporter) -> Any:
    """Where a run's events go: the job's lines prefixed on stderr, or JSON events."""
    from repeatr.supervisor import RunEvents

    def output(stream: str, line: bytes) -> None:
        if out.format is Format.JSON:
            out.event("output", stream=stream, line=line.decode("utf-8", "replace"))
        elif not out.quiet:
            out.close()  # the job is running: fetch progress is over
            prefix = "out| " if stream == "stdout" else "err| "
            out.line(prefix + line.decode("utf-8", "replace").rstrip("\n"))

    return RunEvents(
        log=out.log,
        debug=out.debug,
        output=output,
        progress=lambda phase, done: out.progress(phase, done),
    )


def _write_output_dir(directory: Path, record_json: bytes) -> None:
    """``--output-dir``: each output's ware ID, then the record, each file written atomically.

    A ``.ware_id`` file is rewritten only when its ID changed, so make rules
    depending on it rerun only when the output did; ``record.json`` (written
    last: it marks the set complete) is always rewritten.
    """
    import json
    import os

    def put(path: Path, data: bytes, *, if_changed: bool) -> None:
        try:
            if if_changed and path.read_bytes() == data:
                return
        except OSError:
            pass
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if is_no_space(exc):
                raise DiskFull.of(exc, path, "write --output-dir's") from exc
            raise RepeatrError(
                f"--output-dir: cannot write {path}: {exc.strerror or exc}",
                category=Category.INOPERABLE_PATH,
            ) from exc

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepeatrError(
            f"--output-dir: cannot create {directory}: {exc.strerror or exc}",
            category=Category.INOPERABLE_PATH,
        ) from exc
    results: dict[str, str] = json.loads(record_json).get("results") or {}
    for path, ware in sorted(results.items()):
        name = path.replace("/", "_") + ".ware_id"
        put(directory / name, f"{ware}\n".encode(), if_changed=True)
    put(directory / "record.json", record_json, if_changed=False)


def _net_settings(args: argparse.Namespace) -> Any:
    """The bridge and subnet for ``"network": "bridge"``: host settings, not the formula's."""
    from repeatr.supervisor import NetSettings

    if not (args.bridge or args.subnet):
        return NetSettings()
    from repeatr.net.config import DEFAULT_NETWORK, Network, parse_subnet

    bridge = args.bridge or DEFAULT_NETWORK.bridge
    name = "".join(c if c.isalnum() else "_" for c in bridge.lower())
    subnet = parse_subnet(args.subnet) if args.subnet else DEFAULT_NETWORK.subnet
    return NetSettings(network=Network(name=name, bridge=bridge, subnet=subnet))


def needs(loaded: Any, requested: str) -> Any:
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


def _choose(requested: str, loaded: Any, out: Reporter) -> str:
    """The executor to use: the one asked for, or the best one that can run this job."""
    from repeatr.executors.choose import choose

    name, reasons = choose(requested, needs(loaded, requested))
    for reason in reasons:
        out.debug(f"executor {reason}")
    out.debug(f"executor: {name}" + (" (auto)" if requested == "auto" else ""))
    return str(name)

def cmd_gc(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr import workdir
    from repeatr.cache import Cache
    from repeatr.net.gc import collect

    state = _state_root(args)
    runs = workdir.reap_stale(state)
    temps = Cache(state).clean_stale()
    net = collect()
    for what in (*net.links, *map(str, net.namespaces), *(str(lease) for lease in net.leases)):
        out.log(f"reclaimed {what}")
    for failure in net.failures:
        out.log(failure, level="warning")
    for path in runs:
        out.log(f"removed work dir {path}")
    for name in temps:
        out.log(f"removed cache temp dir {name}")
    out.result(
        f"removed {len(runs)} work dirs, {len(temps)} cache temp dirs, "
        f"{len(net.leases)} IP leases, {len(net.links)} veths, {len(net.namespaces)} netns",
        workDirs=[str(p) for p in runs],
        cacheTemps=list(temps),
        leases=[str(lease) for lease in net.leases],
        veths=list(net.links),
        netns=[str(p) for p in net.namespaces],
    )
    return 0


