"""The ``repeatr`` console script: a memo hit answered before the CLI is even imported.

``make`` and shell loops call ``repeatr run`` on formulas that ran before far
more often than on new ones. For ``repeatr run FILE`` with only options that
do not change what a hit prints, this looks up the formula file's bytes in
the memo store (``repeatr.memo.file_key``) with nothing but the standard
library, and prints the stored record. Anything else — another command, an
option it does not know, a miss — goes to the full CLI, which behaves the
same way on a hit, only slower.
"""

from __future__ import annotations

import atexit
import gc
import os
import signal
import sys
from collections.abc import Sequence, Set
from types import FrameType

# typing costs the memo hit path ~2 ms: annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from repeatr.executors.spawn import ServerProcess

#: The state (cache) directory when neither --cache nor REPEATR_CACHE says otherwise.
DEFAULT_STATE = "/var/lib/repeatr"
_LONG = {"-e": "--executor", "-q": "--quiet", "-j": "--jobs"}
_FLAGS = {"-q", "--quiet", "--ignore-job-exit", "--fail-fast"}
_VALUED = {
    "--cache", "-e", "--executor", "--format", "--bridge", "--subnet", "--ware-disk-limit",
    "-j", "--jobs",
}


def state_root(cache_option: str | None) -> str:
    """--cache, else REPEATR_CACHE, else the default: the one rule for every command."""
    return cache_option or os.environ.get("REPEATR_CACHE") or DEFAULT_STATE


def scan_run(
    argv: Sequence[str], valued: Set[str], flags: Set[str]
) -> tuple[dict[str, str], frozenset[str], list[str]] | str:
    """``argv`` (``run ...``) without argparse (the fast paths'): the valued options and
    the flags given, by their long names, and the files; or why not (an option not
    in ``valued`` or ``flags``)."""
    if not argv or argv[0] != "run":
        return "not a run"
    opts: dict[str, str] = {}
    given: set[str] = set()
    files: list[str] = []
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in valued:
            if not eq:
                if not args:
                    return f"{name} without a value"
                value = args.pop(0)
            opts[_LONG.get(name, name)] = value
        elif arg in flags:
            given.add(_LONG.get(arg, arg))
        elif arg.startswith("-"):
            return f"option {arg}"
        else:
            files.append(arg)
    return opts, frozenset(given), files


def memo_hit(argv: Sequence[str]) -> bool:
    """Print the stored record and return True if ``argv`` is a memoized ``repeatr run``."""
    if os.environ.get("REPEATR_DASK"):
        return False  # on Dask, the client's memo answers for the file it sends
    # --no-memo, --debug, --help, anything new: the full CLI decides
    scanned = scan_run(argv, _VALUED, _FLAGS)
    if isinstance(scanned, str):
        return False
    opts, _flags, files = scanned
    if len(files) != 1 or opts.get("--format", "text") not in ("text", "json", "ansi", "dumb"):
        return False
    from repeatr.memo import MemoStore

    state = state_root(opts.get("--cache"))
    _key, stored = MemoStore(state).get_by_file(files[0], opts.get("--executor", "auto"))
    if stored is None:
        return False
    if opts.get("--format") == "json":
        import json

        sys.stdout.write(json.dumps({"event": "result", "record": json.loads(stored)}) + "\n")
    else:
        sys.stdout.write(stored.decode())
    sys.stdout.flush()
    return True


_pending: list[str] = []
#: An event loop runs (``repeatr.cli.main.run_cancellable``): signals are only recorded.
_in_loop = False


def _in_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _cancel(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C, SIGTERM and SIGHUP: raise KeyboardInterrupt, so the CLI unwinds and exits 8.

    Never in the middle of an import: a module half-initialised by an
    exception (a C extension's, say) can crash the interpreter later. There
    the signal is remembered and delivered again 5 ms later (SIGALRM).

    Never while an event loop runs either: an exception raised between any
    two bytecodes of the loop or of anyio can leave their state half-updated
    (a worker thread started but never told to stop hung the process at
    exit). There the signal is only recorded; the loop's signal watcher
    (``pending_signal``) turns it into a cancellation.
    """
    if signum != signal.SIGALRM:
        _pending.append(signal.Signals(signum).name)
    if not _pending or _in_loop:
        return
    if _in_import(frame):
        signal.setitimer(signal.ITIMER_REAL, 0.005)
        return
    raise KeyboardInterrupt(_pending[0])


def deliver_pending_signal() -> None:
    """Raise now for a signal deferred during an import (before an event loop starts)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    if _pending:
        raise KeyboardInterrupt(_pending[0])


def set_in_loop(running: bool) -> None:
    """While an event loop runs, our handlers record signals instead of raising."""
    global _in_loop
    _in_loop = running


def pending_signal() -> str | None:
    """The first signal recorded and not yet delivered, if any."""
    return _pending[0] if _pending else None


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP take one path: unwind, clean up, exit 8."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, _cancel)


_gc_paused = False


def pause_gc() -> None:
    """No cyclic GC while the command starts up (``resume_gc`` ends the pause).

    Start-up (imports, parsing arguments and the formula) allocates some 35k
    objects that live until exit and makes almost no cyclic garbage: the ~50
    collections it would trigger (one per 700 allocations) find nothing and
    cost ~9 ms of a warm ``repeatr run``.
    """
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True


def resume_gc() -> None:
    """The work starts: freeze what start-up allocated, then collect cycles again.

    Frozen objects are never scanned again, so the first collections stay as
    cheap as ever instead of walking everything start-up made.
    """
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def prestart_server(argv: Sequence[str]) -> ServerProcess | None:
    """For ``repeatr run`` (not a memo hit), start the sandbox server now.

    Forked (``repeatr.executors.spawn.fork_server``), now that this process
    is still single-threaded, right after importing the server's modules:
    the run needs them anyway, so the server costs a fork, not a second
    interpreter starting and importing them (~40 ms of CPU). Spawned
    instead if some thread runs already (a ``sitecustomize``'s, say) or this
    interpreter has options a fork would hand on (``interpreter_options``). None
    when it is not worth it or cannot start: the runner starts one itself
    when a job needs it, and reports why it cannot. A server nobody uses
    ends with ``ServerProcess.close``.
    """
    if not argv or argv[0] != "run" or "-h" in argv or "--help" in argv or os.geteuid() != 0:
        return None
    if os.environ.get("REPEATR_DASK") or any(a.startswith("--dask") for a in argv):
        return None  # the jobs run on Dask workers
    from repeatr.executors.spawn import (
        fork_server,
        interpreter_options,
        single_threaded,
        spawn_server,
    )

    try:
        # A fork is this interpreter, options and all: -O, -W error, -X dev...
        # would reach the server (and its helpers); then a clean one is spawned.
        if single_threaded() and not interpreter_options():
            import repeatr.executors.forkserver  # noqa: F401 (shared with the server: see above)

            return fork_server()
        return spawn_server()
    except OSError:
        return None


def import_msgspec() -> None:
    """Import msgspec without ``typing_extensions`` and ``platform``: ~12 ms less CPU
    on every command that needs it (measured: ``scripts/bench/lean_cpu.py``).

    msgspec's ``_utils`` (imported by its C module) prefers
    ``typing_extensions.get_type_hints``/``Required``/``NotRequired`` and falls
    back to ``typing``'s when that import fails. On Python >= 3.11 (what repeatr
    needs) they are the same, but importing ``typing_extensions`` costs ~3 ms and
    pulls in ``inspect`` (``ast``, ``dis``, ``tokenize``: ~6 ms more), which
    nothing else on a single run imports. msgspec also imports ``uuid``, which
    imports ``platform`` (~3 ms: nine regular expressions compiled) only to call
    ``platform.system()`` once. So while msgspec loads, and only then,
    ``typing_extensions`` fails to import and ``platform`` is a stand-in with
    that one function; anything importing them later gets the real modules.
    """
    if "msgspec" in sys.modules:
        return
    stand_ins: dict[str, object] = {}
    if "typing_extensions" not in sys.modules:
        stand_ins["typing_extensions"] = None  # an import of it raises ImportError
    if "platform" not in sys.modules and "uuid" not in sys.modules:
        platform = type(sys)("platform")
        platform.system = lambda: os.uname().sysname  # type: ignore[attr-defined]
        stand_ins["platform"] = platform
    sys.modules.update(stand_ins)  # type: ignore[arg-type]
    try:
        import msgspec  # noqa: F401
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def entry() -> None:
    pause_gc()
    install_signal_handlers()
    argv = sys.argv[1:]
    server = None
    try:
        # In the try: a SIGTERM landing here (in the memo lookup, while the
        # server starts) is a cancellation too, not a traceback and death by SIGINT.
        if memo_hit(argv):
            leave(0)
        server = prestart_server(argv)
        import_msgspec()
        lean = None
        if server is not None:
            # A single run of the common case, without an event loop (see
            # repeatr.runner.single); None: the full CLI takes it from the start.
            from repeatr.runner.single import lean_run

            lean = lean_run(argv, server)
        if lean is not None:
            code = lean
        else:
            from repeatr.cli.main import main

            code = main(argv, prestarted=server)
    except KeyboardInterrupt as interrupt:
        # A Ctrl-C or SIGTERM before main() was ready (or a second one after it
        # reported the first): still "cancelled", never death by SIGINT.
        sys.stderr.write(f"repeatr: cancelled by {interrupt or 'SIGINT'} [cancelled, exit 8]\n")
        code = 8
    if server is not None:
        server.close()  # unused (a memo hit, an error): else the runner closed it already
    # Everything is torn down: a signal now must not turn into a death by
    # signal during interpreter shutdown (joining worker threads, atexit).
    signal.setitimer(signal.ITIMER_REAL, 0)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    leave(code)


def leave(code: int) -> NoReturn:
    """Exit with ``code`` once the work is done, without tearing the interpreter down.

    Finalization (destroying every module and object, a last GC) takes ~20 ms
    and changes nothing outside the process. What it does that matters runs
    here first, in its order: wait for non-daemon threads (``threading._shutdown``,
    the hook ``Py_FinalizeEx`` calls: it also runs ``threading._register_atexit``
    hooks, e.g. ``concurrent.futures``), run ``atexit`` callbacks (``logging``
    flushing its handlers), flush stdout and stderr. If a flush fails (EPIPE:
    the reader went away), ``sys.exit`` leaves the usual way, so that case
    reports and exits exactly as it always did.
    """
    threading = sys.modules.get("threading")
    shutdown = getattr(threading, "_shutdown", None)
    if threading is not None and shutdown is None:
        sys.exit(code)  # not CPython's threading: let the interpreter do it all
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code)
