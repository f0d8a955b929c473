"""The parent's side of the sandbox server: one per invocation, a helper per job.

A :class:`SandboxServer` is an async context manager. It starts the server
(``repeatr.executors.spawn``) lazily, on the first job, or adopts one the
CLI started before its imports (``prestarted``); ``fork`` asks it for a
sandbox helper (``Fork``/``Forked`` of ``repeatr.executors.protocol``) and
returns a :class:`Helper`: the helper's pid, a pidfd of it to wait on and
signal, and our end of its control socket. Leaving the context closes the
server's socket and waits for it to exit (it first stops any helper still
running); if this process dies instead, the server sees it and does the same
(``repeatr.executors.forkserver``).

A batch shares one server between all its jobs (``repeatr.runner.batch``);
a job run without one gets a server of its own (``HelperExecutor.run``).
Requests are one at a time (a lock); each exchange is shielded from
cancellation, with a timeout, so a cancelled job never leaves an answer
unread for the next one. A helper forked for a job whose parent task is
cancelled before it gets the spec sees our end of its socket close, and exits.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import TracebackType

from repeatr.errors import ExecutorError
from repeatr.executors.protocol import Error, Fork, Forked
from repeatr.executors.spawn import ServerProcess, exited, spawn_server
from repeatr.executors.wire import (
    decode,
    encode,
    frame_length,
    receive_packet,
    send_packet,
    socketpair,
)

#: The place of the current task's formula in its batch's order (the batch sets it in
#: each formula's task; None elsewhere). With a bound on jobs, a fork of turn N takes a
#: place once every earlier turn has had its place or is passed
#: (``SandboxServer.pass_turn``), or sooner if the free places outnumber the earlier
#: turns still waiting: each of those keeps a place, so the jobs start in the order
#: given (strictly so with ``-j 1``), and yet one formula slow to prepare (a big
#: fetch) does not keep every free place idle behind it.
JOB_TURN: ContextVar[int | None] = ContextVar("repeatr_job_turn", default=None)

#: Seconds one exchange with the server may take (it answers in ~1 ms).
REQUEST_TIMEOUT = 30.0
#: Seconds the server gets to exit once its socket is closed (its helpers' grace included).
CLOSE_TIMEOUT = 20.0


def _nothing() -> None:
    pass


class Helper:
    """A sandbox helper the server forked: pid, pidfd, our end of its control socket."""

    def __init__(
        self, pid: int, pidfd: int, control: _socket.socket, release: Callable[[], None] = _nothing
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.control = control
        #: Gives back its place among the server's jobs (once, from ``close``).
        self._release = release

    def exited(self) -> bool:
        return exited(self.pidfd)

    async def wait(self) -> None:
        """Until it has exited (the server reaps it)."""
        import anyio

        if not self.exited():
            await anyio.wait_readable(self.pidfd)

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, sig)

    def close(self) -> None:
        """Close our end of it; called once it has exited (or been killed): its place is free."""
        self.control.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.release()

    def release(self) -> None:
        """Give back its place among the server's jobs (``limit_jobs``), once: the job has
        exited (``close`` does it too, for a helper that never got that far)."""
        release, self._release = self._release, _nothing
        release()


class SandboxServer:
    """One sandbox server for every job of an invocation (see the module doc)."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        prestarted: ServerProcess | None = None,
        jobs: int | None = None,
    ) -> None:
        import anyio

        self.python = python
        self._process = prestarted
        #: At most this many helpers alive at once (None: no bound); ``limit_jobs``.
        self._slots: anyio.CapacityLimiter | None = None
        if jobs is not None:
            self.limit_jobs(jobs)
        self._sock: _socket.socket | None = None
        self._lock = anyio.Lock()
        self._closed = False
        #: The lowest turn (``JOB_TURN``) not yet given a place or passed; those done beyond it.
        self._next_turn = 0
        self._turns_done: set[int] = set()
        #: Set (and replaced) when a turn is passed or a place freed: waiting turns look again.
        self._changed = anyio.Event()
        #: How many server processes this object started or adopted (a test counts them).
        self.starts = 0

    async def __aenter__(self) -> SandboxServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def pid(self) -> int | None:
        """The server's pid, once it runs."""
        return self._process.pid if self._process is not None else None

    def _connection(self) -> _socket.socket:
        if self._closed:
            raise ExecutorError("the sandbox server is closed")
        if self._sock is not None:
            return self._sock
        if self._process is None or self._process.closed:
            try:
                self._process = spawn_server(self.python)
            except OSError as e:
                raise ExecutorError(f"cannot start the sandbox server {self.python}: {e}") from e
        self.starts += 1
        sock = _socket.socket(fileno=self._process.sock)
        self._process.sock = -1  # ours to close now
        sock.setblocking(False)
        self._sock = sock
        return sock

    def limit_jobs(self, jobs: int) -> None:
        """At most ``jobs`` (at least 1) jobs at once: what ``-j`` bounds.

        A helper holds a place from ``fork`` until its job has exited
        (:meth:`Helper.release`: the exit reported, or an error) or, at the
        latest, until it is closed; a ``fork`` beyond the bound waits for a
        place. What comes before (reading the formula, the memo lookup,
        fetching inputs, the work dir) and after (packing outputs, the
        record, the helper's own exit, removing the work dir) is outside it.
        """
        import anyio

        if self._slots is None:
            self._slots = anyio.CapacityLimiter(max(1, jobs))
        else:
            self._slots.total_tokens = max(1, jobs)

    def pass_turn(self, turn: int) -> None:
        """Turn ``turn`` (``JOB_TURN``) has had its place, or will not fork (a memo
        hit, an error, cancelled): the next turns may have theirs. Idempotent."""
        if turn < self._next_turn or turn in self._turns_done:
            return
        self._turns_done.add(turn)
        while self._next_turn in self._turns_done:
            self._turns_done.discard(self._next_turn)
            self._next_turn += 1
        self._signal()

    def _signal(self) -> None:
        import anyio

        self._changed.set()
        self._changed = anyio.Event()

    def _place_to_spare(self, turn: int) -> bool:
        """Whether a later ``turn`` may take a place now: one is left for each earlier
        turn that has not had its place (``-j 1``: never, so strictly in order)."""
        assert self._slots is not None
        waiting = turn - self._next_turn - sum(1 for t in self._turns_done if t < turn)
        return self._slots.available_tokens > waiting

    @contextlib.contextmanager
    def turn(self, turn: int) -> Iterator[None]:
        """The current task's forks take turn ``turn`` (``JOB_TURN``); passed on exit,
        whether it forked or not (a memo hit, an error, cancelled), so the next may go."""
        token = JOB_TURN.set(turn)
        try:
            yield
        finally:
            JOB_TURN.reset(token)
            self.pass_turn(turn)

    @property
    def jobs(self) -> int | None:
        """The bound on helpers alive at once (None: none)."""
        return None if self._slots is None else int(self._slots.total_tokens)

    async def fork(self, stdin: int, stdout: int, stderr: int) -> Helper:
        """A new sandbox helper with these stdio fds (the server gets copies).

        With a bound (``limit_jobs``), waits first for a place; the helper
        gives it back when it is closed.
        """
        release = _nothing
        if self._slots is not None:
            slots, token = self._slots, object()
            turn = JOB_TURN.get()
            if turn is not None:
                while turn > self._next_turn and not self._place_to_spare(turn):
                    await self._changed.wait()
            if turn is not None and turn > self._next_turn:
                slots.acquire_on_behalf_of_nowait(token)  # a spare place (no await since)
            else:
                await slots.acquire_on_behalf_of(token)
            if turn is not None:
                self.pass_turn(turn)

            def release() -> None:
                slots.release_on_behalf_of(token)
                self._signal()

        try:
            return await self._fork(stdin, stdout, stderr, release)
        except BaseException:
            release()
            raise

    async def _fork(
        self, stdin: int, stdout: int, stderr: int, release: Callable[[], None]
    ) -> Helper:
        import anyio

        ours, theirs = socketpair()
        try:
            async with self._lock:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(REQUEST_TIMEOUT) as scope:
                        answer, fds = await self._exchange(
                            Fork(), [theirs.fileno(), stdin, stdout, stderr]
                        )
                    if scope.cancelled_caught:
                        raise ExecutorError(
                            f"the sandbox server (pid {self.pid}) did not answer"
                            f" in {REQUEST_TIMEOUT:.0f} s"
                        )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _helper(answer, fds, ours, release)

    async def _exchange(self, msg: Fork, fds: list[int]) -> tuple[Error | Forked, list[int]]:
        import anyio

        sock = self._connection()
        try:
            while True:
                try:
                    send_packet(sock, encode(msg), fds)
                    break
                except BlockingIOError:
                    await anyio.wait_writable(sock.fileno())
            while True:
                try:
                    data, got = receive_packet(sock, 4)
                    break
                except BlockingIOError:
                    await anyio.wait_readable(sock.fileno())
        except OSError as e:
            raise self._gone(str(e)) from None
        return _answer(data, got, self._gone)

    def _gone(self, why: str) -> ExecutorError:
        return _gone(self.pid, why)

    async def aclose(self) -> None:
        """Close its socket and wait for it to exit (SIGKILL after ``CLOSE_TIMEOUT``)."""
        import anyio

        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            process = self._process
            if process is None or process.closed:
                return
            if process.sock >= 0:
                os.close(process.sock)
                process.sock = -1
            with anyio.move_on_after(CLOSE_TIMEOUT):
                if not process.exited():
                    await anyio.wait_readable(process.pidfd)
            if not process.exited():
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(process.pidfd, signal.SIGKILL)
                await anyio.wait_readable(process.pidfd)
            process.reap()


def _gone(pid: int | None, why: str) -> ExecutorError:
    return ExecutorError(
        f"the sandbox server (pid {pid}) is gone ({why})",
        hint="rerun with --debug; its traceback, if any, is on stderr",
    )


def _answer(
    data: bytes, got: list[int], gone: Callable[[str], ExecutorError]
) -> tuple[Error | Forked, list[int]]:
    """The server's answer in ``data`` (with the fds ``got``), checked."""
    if not data:
        raise gone("end of stream")
    try:
        if frame_length(data[:4]) != len(data) - 4:
            raise ValueError("a truncated answer")
        answer = decode(data[4:])
    except ValueError as e:
        for fd in got:
            os.close(fd)
        raise ExecutorError(f"sandbox server protocol: {e}") from None
    if not isinstance(answer, Error | Forked):
        for fd in got:
            os.close(fd)
        raise ExecutorError(f"sandbox server protocol: got {answer.tag}")
    return answer, got


def _helper(
    answer: Error | Forked,
    fds: list[int],
    ours: _socket.socket,
    release: Callable[[], None] = _nothing,
) -> Helper:
    """The helper of a ``Forked`` answer (``ours``: our end of its control socket;
    ``release`` gives back its place among the server's jobs)."""
    if isinstance(answer, Forked) and len(fds) == 1:
        return Helper(answer.pid, fds[0], ours, release)
    ours.close()
    for fd in fds:
        os.close(fd)
    if isinstance(answer, Error):
        raise ExecutorError(answer.message, hint=answer.hint)
    raise ExecutorError(f"sandbox server protocol: got {answer.tag}, not forked")


def _wait_fd(fd: int, events: int, timeout: float) -> bool:
    """Whether ``fd`` became ready for ``events`` within ``timeout`` seconds."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(int(timeout * 1000)))


class BlockingServer:
    """The same server and messages as :class:`SandboxServer`, for a caller without an
    event loop (``repeatr.runner.single``): each call blocks, at most its timeout."""

    def __init__(self, process: ServerProcess) -> None:
        self._process = process
        sock = _socket.socket(fileno=process.sock)
        process.sock = -1  # ours to close now
        self._sock: _socket.socket | None = sock

    @property
    def pid(self) -> int:
        return self._process.pid

    def fork(self, stdin: int, stdout: int, stderr: int, *, last: bool = False) -> Helper:
        """A new sandbox helper with these stdio fds (the server gets copies).

        ``last``: no other will be asked for; the server may become this helper
        (:class:`~repeatr.executors.protocol.Fork`), and then serves nothing else.
        """
        if self._sock is None:
            raise ExecutorError("the sandbox server is closed")
        sock = self._sock
        ours, theirs = socketpair()
        try:
            try:
                send_packet(
                    sock, encode(Fork(last=last)), [theirs.fileno(), stdin, stdout, stderr]
                )
                if not _wait_fd(sock.fileno(), select.POLLIN, REQUEST_TIMEOUT):
                    raise ExecutorError(
                        f"the sandbox server (pid {self.pid}) did not answer"
                        f" in {REQUEST_TIMEOUT:.0f} s"
                    )
                data, got = receive_packet(sock, 4)
            except OSError as e:
                raise _gone(self.pid, str(e)) from None
            answer, fds = _answer(data, got, lambda why: _gone(self.pid, why))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _helper(answer, fds, ours)

    def close(self) -> None:
        """Close its socket and wait for it to exit (SIGKILL after ``CLOSE_TIMEOUT``)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        process = self._process
        if process.closed:
            return
        if not _wait_fd(process.pidfd, select.POLLIN, CLOSE_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(process.pidfd, signal.SIGKILL)
            _wait_fd(process.pidfd, select.POLLIN, CLOSE_TIMEOUT)
        process.reap()
