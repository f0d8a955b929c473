"""The sandbox server: one per invocation, it forks a sandbox helper per job.

Started by the parent (``repeatr.executors.spawn``) as a single-threaded
process, so forking it is safe, unlike forking the threaded parent: for
``repeatr run``, a fork of the CLI made before it starts any thread or
imports anyio (:func:`start_forked`); otherwise a fresh, isolated
interpreter (``python -I -S -c ... --server FD PARENT_PID``, :func:`main`). Import-light like
``repeatr.executors.sandbox``, which it imports: a forked helper starts with
everything loaded, in ~1 ms instead of an interpreter's start-up.

Protocol (``repeatr.executors.protocol``): the parent sends :class:`Fork` on
the SOCK_SEQPACKET socket ``FD``, one packet with four file descriptors
(the helper's control socket, its stdin, stdout, stderr); the server forks a
helper that takes them as its own, closes its copies, and answers
:class:`Forked` (the helper's pid, with a pidfd of it), or :class:`Error`
when it cannot fork. Requests are answered in order, one at a time. The
helper then speaks the helper protocol with the parent on its control
socket, as ``repeatr.executors.sandbox`` describes.

Lifetime: the server lives as long as the invocation, never longer. It
watches a pidfd of the parent *process* (opened first thing, then getppid is
checked to close the race) and its socket; when the parent dies (even by
SIGKILL) or closes the socket, it SIGTERMs every helper still running (each
kills its job's tree and runs its cleanups), waits for them (SIGKILL after
``HELPER_GRACE`` seconds), and exits. Each helper also watches the parent's
pidfd itself, and gets SIGTERM when the server dies
(PR_SET_PDEATHSIG toward the server: single-threaded, so exact): a helper
whose server is gone kills its job, cleans up and exits. The server reaps
its helpers as they exit (their pidfds in its poll set); it never writes to
its stdout (``/dev/null``) and keeps stderr for a crash's traceback only.
"""

from __future__ import annotations

import _socket
import gc
import os
import select
import signal
import sys
import time

from repeatr.errors import ExecutorError
from repeatr.executors.protocol import Fork, Forked
from repeatr.executors.sandbox import (
    Control,
    Sandbox,
    default_signals,
    error_msg,
    leave,
    serve_parent,
)
from repeatr.executors.sandbox import main as replay_main
from repeatr.executors.spawn import HELPER_ENV, isolated_path
from repeatr.executors.wire import decode, encode, frame_length, receive_packet, send_packet
from repeatr.linux import capability, libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.executors.protocol import Message

#: File descriptors a :class:`Fork` carries: control socket, stdin, stdout, stderr.
FORK_FDS = 4
#: The forked server's name (``/proc/PID/comm``, at most 15 bytes), its helpers' too.
PROCESS_NAME = "repeatr-sandbox"
#: Seconds the helpers get to clean up when the invocation ends, before SIGKILL.
HELPER_GRACE = 15.0


def receive(sock: _socket.socket) -> tuple[Message | None, list[int]]:
    """One packet: (its message, None at end of stream; the fds it carried)."""
    data, fds = receive_packet(sock, FORK_FDS)
    if not data:
        return None, fds
    try:
        if len(data) < 4 or frame_length(data[:4]) != len(data) - 4:
            raise ValueError("a truncated request")
        return decode(data[4:]), fds
    except (ValueError, EOFError, TypeError) as e:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"sandbox server protocol: {e}") from None


def reply(sock: _socket.socket, msg: Message, fds: list[int]) -> None:
    """One packet with ``msg`` (and ``fds``)."""
    send_packet(sock, encode(msg), fds)


class Server:
    """The server's state: its socket, the parent's pidfd, the helpers it forked."""

    def __init__(self, sock: _socket.socket, parent: int, parent_pid: int) -> None:
        self.sock = sock
        self.parent = parent
        self.parent_pid = parent_pid
        self.pid = os.getpid()
        #: pidfd -> pid of each helper not yet reaped.
        self.helpers: dict[int, int] = {}
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN)
        self.poller.register(parent, select.POLLIN)

    def serve(self) -> int:
        """Answer requests until the parent dies or closes the socket; then stop."""
        while True:
            for fd, _events in self.poller.poll():
                if fd == self.parent:
                    return self.stop()
                if fd in self.helpers:
                    self.reap(fd)
                elif fd == self.sock.fileno():
                    try:
                        if not self.request():
                            return self.stop()
                    except OSError:  # the parent is gone (or going): as its death
                        return self.stop()

    def request(self) -> bool:
        """Receive and answer one request; False at end of stream."""
        try:
            msg, fds = receive(self.sock)
        except ValueError as e:
            reply(self.sock, error_msg(ExecutorError(str(e))), [])
            return True
        if msg is None:
            for extra in fds:
                os.close(extra)
            return False
        self.answer(msg, fds)
        return True

    def answer(self, msg: Message, fds: list[int]) -> None:
        if isinstance(msg, Fork) and msg.last and len(fds) == FORK_FDS and not self.helpers:
            code = 1
            try:
                code = self.become_helper(fds)
            finally:
                leave(code)
        try:
            if not isinstance(msg, Fork) or len(fds) != FORK_FDS:
                what = msg.tag if not isinstance(msg, Fork) else f"fork with {len(fds)} fds"
                raise ExecutorError(f"sandbox server protocol: {what}")
            try:
                pid = os.fork()
            except OSError as e:
                raise ExecutorError(f"the sandbox server cannot fork a helper: {e}") from e
            if pid == 0:
                code = 1
                try:
                    code = self.helper(fds)
                finally:
                    leave(code)
        except ExecutorError as e:
            for fd in fds:
                os.close(fd)
            reply(self.sock, error_msg(e), [])
            return
        for fd in fds:
            os.close(fd)  # the helper's now
        pidfd = os.pidfd_open(pid)
        self.helpers[pidfd] = pid
        self.poller.register(pidfd, select.POLLIN)
        reply(self.sock, Forked(pid=pid), [pidfd])

    def reap(self, pidfd: int) -> None:
        pid = self.helpers.pop(pidfd)
        self.poller.unregister(pidfd)
        os.close(pidfd)
        try:  # noqa: SIM105 (contextlib: start-up time)
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    def stop(self) -> int:
        """SIGTERM every helper, wait for them (SIGKILL after ``HELPER_GRACE``), reap them."""
        # Only the helpers' pidfds now: the parent's stays readable, and would
        # end every wait at once (taken for the grace running out).
        self.poller.unregister(self.parent)
        self.poller.unregister(self.sock.fileno())
        for pidfd in self.helpers:
            try:  # noqa: SIM105
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + HELPER_GRACE
        while self.helpers:
            wait_ms = max(0, int((deadline - time.monotonic()) * 1000))
            ready = [fd for fd, _ in self.poller.poll(wait_ms) if fd in self.helpers]
            if not ready:  # the grace is over
                for pidfd in self.helpers:
                    try:  # noqa: SIM105
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + HELPER_GRACE
                continue
            for pidfd in ready:
                self.reap(pidfd)
        return 0

    # --- in the forked helper ------------------------------------------------------
    def helper(self, fds: list[int]) -> int:
        """Become the sandbox helper of one job (``repeatr.executors.sandbox``)."""
        os.setsid()  # a process group of its own, as each helper had
        return self._serve_job(fds, self.pid)  # its death signal: the server's

    def become_helper(self, fds: list[int]) -> int:
        """A ``last`` fork with no helper running: be the job's helper ourselves.

        Answered first (``Forked`` with our own pidfd), then the server is gone:
        its socket closed, nothing else served. Already what a helper needs
        (a session of its own, the helper's signals and environment); its
        death signal now comes from the parent, whose pidfd the box watches.
        """
        pidfd = os.pidfd_open(self.pid)
        try:
            reply(self.sock, Forked(pid=self.pid), [pidfd])
        finally:
            os.close(pidfd)
        os.close(self.sock.detach())
        return self._serve_job(fds, self.parent_pid)

    def _serve_job(self, fds: list[int], death_from: int) -> int:
        """Serve the job: SIGTERM (ours, or the death signal when ``death_from``, our
        parent, dies) cleans up and goes; the job's stdio on 0-2, every other
        descriptor closed."""
        control, *stdio = fds
        box = Sandbox(Control(control, self.parent))
        signal.signal(signal.SIGTERM, box.on_term)
        libc.set_pdeathsig(signal.SIGTERM)
        if os.getppid() != death_from:
            return 1  # it died before the death signal was set
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)  # inheritable: the job's stdio
        keep = {0, 1, 2, control, self.parent}
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:  # noqa: SIM105 (the listing's own fd is gone already)
                    os.close(fd)
                except OSError:
                    pass
        os.set_inheritable(control, False)  # never the job's, nor an OCI runtime's
        libc.set_child_subreaper()  # not inherited through fork
        return serve_parent(box)


def main(argv: list[str]) -> int:
    """``--server FD PARENT_PID`` (from the parent), or ``--spec FILE`` (a replay by hand)."""
    if len(argv) != 4 or argv[1] != "--server":
        return replay_main(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    return serve(int(argv[2]), int(argv[3]))


def start_forked(sock_fd: int, parent_pid: int) -> int:
    """Serve in a child forked from the CLI (``repeatr.executors.spawn.fork_server``).

    Made what a spawned server is (``spawn_server``'s ``posix_spawn``): a
    session of its own (Ctrl-C reaches the invocation, not us), SIGINT
    ignored and every other signal the parent handled back to its default,
    the helper's environment (``HELPER_ENV``: nothing of the invocation's
    reaches a job through us) and ``sys.path`` (``isolated_path``), stdin
    and stdout on ``/dev/null``, the cyclic GC on (the CLI pauses it during
    its start-up; what it allocated before the fork is frozen). Named ``repeatr-sandbox``
    (``/proc/PID/comm``, what ``ps`` shows; its helpers inherit it), since
    its command line is the invocation's.
    """
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, 0)  # one the CLI's handler set in us (a deferred Ctrl-C)
    os.environ.clear()
    os.environ.update(HELPER_ENV)
    sys.path[:] = isolated_path()  # for what it or a helper imports later (oci_sandbox, ...)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    with open("/proc/self/comm", "w") as comm:
        comm.write(PROCESS_NAME)
    # What the CLI allocated before the fork lives as long as we do: frozen, never
    # scanned. Else the first collection walks all of it (the CLI paused the GC, so
    # it is all in the youngest generation) and copies every page it touches.
    gc.freeze()
    gc.enable()
    return serve(sock_fd, parent_pid)


def serve(sock_fd: int, parent_pid: int) -> int:
    """The server on socket ``sock_fd`` for the process ``parent_pid``, until either goes."""
    default_signals()  # nothing its invoker ignored or blocked reaches a helper or a job
    os.set_inheritable(sock_fd, False)
    try:
        parent = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        return 1
    if os.getppid() != parent_pid:
        return 1  # the parent died (and its pid was reused) before we held the pidfd
    # Only what the parent meant to hand on: not a jobserver pipe, not a terminal.
    for fd in range(3, max(sock_fd, parent) + 1):
        if fd not in (sock_fd, parent):
            try:  # noqa: SIM105
                os.close(fd)
            except OSError:
                pass
    os.closerange(max(sock_fd, parent) + 1, os.sysconf("SC_OPEN_MAX"))
    capability.running_last_cap()  # once here, not in every helper
    return Server(_socket.socket(fileno=sock_fd), parent, parent_pid).serve()
