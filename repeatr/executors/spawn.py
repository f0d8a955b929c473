"""Starting the sandbox server, with the standard library only.

Two ways. :func:`fork_server`: ``repeatr.cli.entry`` forks it for ``repeatr
run`` while the process is still single-threaded, before it imports the
CLI, anyio and the rest, and right after importing the server's own modules
(which the run needs anyway): the server then costs a fork (~1 ms of CPU)
instead of an interpreter's start-up and those imports (~40 ms of CPU).
:func:`spawn_server`: a process that may have threads by now (a batch or a
graph started without one, a library caller) starts a fresh interpreter,
with ``os.posix_spawn``. ``repeatr.executors.server.SandboxServer`` adopts
either (or spawns one itself, lazily). Hence no ``subprocess`` here, only
``_socket`` (cheap, built in).

The command line is that of the helper (``HELPER_MAIN``): ``-I`` (no cwd or
script dir on sys.path, every PYTHON* variable ignored, no user site) and
``-S`` (no site: start-up time); repeatr is found by the absolute path
appended here, after the standard library, so no file next to the package
can shadow a stdlib module either. ``-c`` rather than ``-m``: runpy's own
imports cost ~1.3 ms.
"""

from __future__ import annotations

import _socket
import os
import select
import signal
import sys

import repeatr

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(repeatr.__file__)))
#: The sandbox's entry point: the server (``--server FD PARENT_PID``) or a replay (``--spec FILE``).
HELPER_MAIN = (
    f"import sys; sys.path.append({_PKG_PARENT!r}); "
    "from repeatr.executors.forkserver import leave, main; leave(main(sys.argv))"
)
#: The helper's whole environment: nothing PYTHON*, a plain PATH, a UTF-8 locale.
HELPER_ENV = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}


def isolated_path() -> list[str]:
    """The ``sys.path`` of ``helper_command``'s interpreter: the standard library, then repeatr.

    What ``-I -S`` leaves (the stdlib's zip, directory and ``lib-dynload``),
    then the package's parent: a server forked from the CLI
    (``repeatr.executors.forkserver.start_forked``) takes it for the imports
    it and its helpers do later, so they find nothing the spawned one would
    not (no cwd, no ``PYTHONPATH``, no site-packages).
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    lib = os.path.join(sys.base_prefix, sys.platlibdir)
    return [
        os.path.join(lib, f"python{version.replace('.', '')}.zip"),
        os.path.join(lib, f"python{version}"),
        os.path.join(sys.base_exec_prefix, sys.platlibdir, f"python{version}", "lib-dynload"),
        _PKG_PARENT,
    ]


def helper_command(python: str, *args: str) -> list[str]:
    """The command line of the sandbox entry point with ``args``."""
    return [python, "-I", "-S", "-c", HELPER_MAIN, *args]


def exited(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has exited (poll, not select: any fd number)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


class ServerProcess:
    """A started sandbox server: its pid, a pidfd of it, our end of its socket."""

    def __init__(self, pid: int, pidfd: int, sock: int) -> None:
        self.pid = pid
        self.pidfd = pidfd
        #: Our end of its SOCK_SEQPACKET socket (closing it ends the server).
        self.sock = sock
        self.closed = False

    def exited(self) -> bool:
        return exited(self.pidfd)

    def reap(self) -> None:
        """Collect its exit status (it has exited) and close the pidfd."""
        try:  # noqa: SIM105 (contextlib: start-up time)
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        os.close(self.pidfd)
        self.closed = True

    def close(self) -> None:
        """End a server nobody used (a memo hit, an error before the first job): at once.

        SIGKILL, not a wait for it to see its socket close: it may still be
        starting, and a memo hit must not wait for that. Had it helpers,
        each would still clean up (PR_SET_PDEATHSIG toward the server).
        ``SandboxServer.aclose`` ends a server that served, gently.
        """
        if self.closed:
            return
        if self.sock >= 0:
            os.close(self.sock)
            self.sock = -1
        try:  # noqa: SIM105 (contextlib: start-up time)
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.reap()


def interpreter_options() -> list[str]:
    """What this interpreter was started with that a fork would hand the server.

    A forked server is this interpreter: ``-O`` (its checks' ``assert`` gone),
    ``-W error`` or ``PYTHONWARNINGS`` (a warning becomes an exception in a
    helper), ``-v``, ``-X importtime``/``tracemalloc``/``dev`` mode and the
    like would all reach the code that builds sandboxes as root, though the
    spawned one (``-I -S``) has none of them. Empty when the fork is the
    spawned server's equal; else the options, and the caller spawns.
    """
    flags = sys.flags
    found = [f"-{c * n}" for c, n in (("O", flags.optimize), ("v", flags.verbose),
                                      ("b", flags.bytes_warning), ("d", flags.debug)) if n]
    if flags.inspect:
        found.append("-i")
    if flags.dev_mode:
        found.append("-X dev")
    if not flags.hash_randomization:
        found.append("PYTHONHASHSEED=0")
    if flags.int_max_str_digits != -1:
        found.append(f"-X int_max_str_digits={flags.int_max_str_digits}")
    found.extend(f"-W {w}" for w in sys.warnoptions)
    found.extend(f"-X {k}" if v is True else f"-X {k}={v}" for k, v in sys._xoptions.items())
    if sys.getfilesystemencoding() != "utf-8":
        found.append(f"filesystem encoding {sys.getfilesystemencoding()}")
    return found


def single_threaded() -> bool:
    """Whether this process has one thread (the kernel's count: threads of C code too)."""
    return len(os.listdir("/proc/self/task")) == 1


def fork_server() -> ServerProcess:
    """Fork a sandbox server from this process, which must be single-threaded.

    Forking a process with other threads copies locks they may hold (the
    allocator's, the import lock, a logging handler's) into a child that
    has no thread to release them: RuntimeError then, a caller's mistake
    (``repeatr.cli.entry.prestart_server`` checks :func:`single_threaded`
    and spawns one instead). The child becomes a server as a spawned one
    would start (``repeatr.executors.forkserver.start_forked``): a session of
    its own, default signals, ``HELPER_ENV``, stdin and stdout on
    ``/dev/null``; it never returns into the caller's code. Import
    ``repeatr.executors.forkserver`` before calling this if the caller will
    import it anyway (the CLI does): else the server imports it after the
    fork, and both processes pay for it. OSError if it cannot fork.
    """
    if not single_threaded():
        raise RuntimeError("fork_server: this process has threads (spawn_server is for that)")
    if options := interpreter_options():
        raise RuntimeError(f"fork_server: this interpreter has {' '.join(options)} (spawn_server)")
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    parent = os.getpid()
    try:
        pid = os.fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        _become_server(ours, theirs, parent)
    theirs.close()
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        ours.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return ServerProcess(pid, pidfd, ours.detach())


def _become_server(ours: _socket.socket, theirs: _socket.socket, parent: int) -> NoReturn:
    """In the child of :func:`fork_server`: serve, then exit; never back to the caller."""
    code = 1
    try:
        ours.close()
        from repeatr.executors.forkserver import start_forked

        code = start_forked(theirs.detach(), parent)
    except KeyboardInterrupt:
        pass  # a Ctrl-C before start_forked took the CLI's handlers away: the CLI reports it
    except BaseException:  # a traceback on stderr, as a spawned server's, then exit
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def spawn_server(python: str = sys.executable) -> ServerProcess:
    """Start a sandbox server that dies with this process; OSError if it cannot start."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    devnull = -1
    try:
        os.set_inheritable(theirs.fileno(), True)
        devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        argv = helper_command(python, "--server", str(theirs.fileno()), str(os.getpid()))
        pid = os.posix_spawn(
            python, argv, HELPER_ENV,
            file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)],
            setsid=True,  # Ctrl-C reaches us, not the server
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if devnull >= 0:
            os.close(devnull)
    return ServerProcess(pid, os.pidfd_open(pid), ours.detach())
