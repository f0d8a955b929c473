"""Starting the sandbox server, with the standard library only.

``repeatr.cli.entry`` calls :func:`spawn_server` for ``repeatr run`` before
it imports the CLI, anyio and the rest, so the server's start-up (an
interpreter, the helper's modules: ~25 ms of CPU) runs on the other core
while the parent imports; ``repeatr.executors.server.SandboxServer`` adopts
it (or spawns one itself, lazily). Hence no ``subprocess`` here, only
``os.posix_spawn`` and ``_socket`` (cheap, built in).

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

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(repeatr.__file__)))
#: The sandbox's entry point: the server (``--server FD PARENT_PID``) or a replay (``--spec FILE``).
HELPER_MAIN = (
    f"import sys; sys.path.append({_PKG_PARENT!r}); "
    "from repeatr.executors.forkserver import leave, main; leave(main(sys.argv))"
)
#: The helper's whole environment: nothing PYTHON*, a plain PATH, a UTF-8 locale.
HELPER_ENV = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}


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
