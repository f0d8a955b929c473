"""The parent's side of one job's conversation with its sandbox helper, without IO.

The protocol (``repeatr.executors.protocol``: the parent sends a ``Spec``;
the helper reports ``Assembled``, ``Started``, ``Exit``, or an ``Error``
instead of any of them; the parent answers ``Exit`` with ``Done``) is
written once, here, and driven by two drivers that only move bytes:
``repeatr.executors.helper`` (anyio: batches, graphs, every full run) and
``repeatr.runner.single`` (blocking calls and ``poll``: the lean single run).

A :class:`Conversation` is fed what arrives on the control socket, in
chunks of any size (``b""``: end of stream); it returns what happened
(:data:`Event`) and, once :attr:`Conversation.over`, the outcome: the job's
:class:`~repeatr.executors.base.JobResult`, or the error the helper reported,
as ours. Whatever arrives (a torn frame, garbage, a message out of order or
of the wrong types, a helper gone before its last report) ends as an
``ExecutorError``, never another exception: a hostile helper, or a job that
took it over, cannot make the parent traceback.

:class:`JobPipes` are the job's stdout and stderr (pipes the helper and the
job inherit), read without blocking and cut into lines (:class:`Lines`).

Imported by the lean single run, so nothing heavy at the top: no anyio,
shlex, socket, threading, msgspec (``JobResult`` is imported when one is made).
"""

from __future__ import annotations

import os
import time

from repeatr.errors import AssemblyError, Category, ExecutorError, JobInvalid, RepeatrError
from repeatr.executors.protocol import Assembled, Done, Error, Exit, Started
from repeatr.executors.wire import decode, encode, frame_length

TYPE_CHECKING = False  # typing costs ~10 ms of imports: annotations only
if TYPE_CHECKING:
    from collections.abc import Sequence

    from repeatr.executors.base import JobResult
    from repeatr.executors.protocol import Message, Spec

#: Longer lines of the job's output are delivered in pieces.
MAX_LINE = 64 * 1024
#: What one read of a job's pipe takes.
CHUNK = 64 * 1024
#: What :meth:`JobPipes.drain` reads from a pipe at most: a pipe holds at most
#: ``/proc/sys/fs/pipe-max-size`` (1 MiB by default), and what a job's
#: leftover descendants write after that is not the job's to wait for.
DRAIN_LIMIT = 1 << 20

_ERRORS: dict[str, type[RepeatrError]] = {
    Category.ASSEMBLY_INVALID.name: AssemblyError,
    Category.JOB_INVALID.name: JobInvalid,
    Category.EXECUTOR.name: ExecutorError,
}
_NONE = type(None)
#: The types of each report's fields: ``protocol.Message`` checks names, not types.
_TYPES: dict[type[Message], dict[str, tuple[type, ...]]] = {
    Assembled: {"pid": (int,)},
    Started: {"pid": (int,)},
    Exit: {
        "code": (int,), "signal": (int, _NONE), "timed_out": (bool,), "oom": (bool,),
        "disk": (str,),
    },
    Error: {
        "category": (str,), "message": (str,), "hint": (str, _NONE), "traceback": (str, _NONE),
    },
}
#: The reports in the order the helper sends them (an ``Error`` may replace any).
_ORDER: tuple[type[Message], ...] = (Assembled, Started, Exit)


class JobExited:
    """An event: the job exited; its mounts live until the parent sends ``Done``."""

    __slots__ = ("result",)

    def __init__(self, result: JobResult) -> None:
        self.result = result

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobExited) and other.result == self.result

    def __hash__(self) -> int:
        return hash(self.result)

    def __repr__(self) -> str:
        return f"JobExited({self.result!r})"


if TYPE_CHECKING:
    Event = Assembled | Started | JobExited | Error


def protocol_error(what: str) -> ExecutorError:
    return ExecutorError(f"sandbox helper protocol: {what}")


class Conversation:
    """One job's conversation with its helper (see the module doc).

    The driver sends :meth:`start`'s frame, feeds :meth:`receive` what
    arrives until :attr:`over`; on :class:`JobExited` it packs the outputs,
    then sends :meth:`done`'s frame; then it waits for the helper to exit
    and takes :meth:`outcome`.
    """

    def __init__(self, argv: Sequence[str], helper_pid: int = 0) -> None:
        self.argv = tuple(argv)
        #: For messages only (the helper's pid, as the server reported it).
        self.helper_pid = helper_pid
        self._buf = bytearray()
        self._next = 0  # index in _ORDER of the report expected next
        self._t0: float | None = None
        self.reported: Error | None = None
        self.result: JobResult | None = None
        #: The job's pid, once ``Started``.
        self.job_pid: int | None = None
        self._done = False

    @property
    def over(self) -> bool:
        """The helper has made its last report (``Exit`` or ``Error``)."""
        return self.reported is not None or self._next == len(_ORDER)

    def start(self, spec: Spec, now: float | None = None) -> bytes:
        """The frame that sends ``spec``; the job's duration counts from ``now``."""
        if self._t0 is not None:
            raise RuntimeError("the spec was already sent")
        data = encode(spec)
        self._t0 = time.monotonic() if now is None else now
        return data

    def receive(self, data: bytes, now: float | None = None) -> list[Event]:
        """What ``data`` (from the control socket; ``b""``: its end) completes.

        Raises ExecutorError for anything but the protocol; what arrives once
        it is :attr:`over` is not read (the helper sends nothing after that).
        """
        if self._t0 is None:
            raise RuntimeError("the spec was not sent")
        if self.over:
            return []
        if not data:
            raise ExecutorError(
                f"the sandbox helper (pid {self.helper_pid}) exited without a report",
                hint="rerun with --debug; the helper's stderr is in the job's stderr",
            )
        self._buf += data
        events: list[Event] = []
        buf = self._buf
        while len(buf) >= 4 and not self.over:
            try:
                n = frame_length(bytes(buf[:4]))
                if len(buf) < 4 + n:
                    break
                msg = decode(bytes(buf[4 : 4 + n]))
            except ValueError as e:
                raise protocol_error(str(e)) from None
            del buf[: 4 + n]
            events.append(self._report(msg, now))
        if self.over:
            self._buf = bytearray()
        return events

    def _report(self, msg: Message, now: float | None) -> Event:
        kind = type(msg)
        expected = _ORDER[self._next]
        if kind is not expected and kind is not Error:
            raise protocol_error(f"got {msg.tag}, not {expected.tag}")
        for name, types in _TYPES[kind].items():
            value = getattr(msg, name)
            if not isinstance(value, types):
                raise protocol_error(f"{msg.tag}.{name} is a {type(value).__name__}")
        if isinstance(msg, Error):
            self.reported = msg
            return msg
        self._next += 1
        if isinstance(msg, Started):
            self.job_pid = msg.pid
        if isinstance(msg, Exit):
            assert self._t0 is not None
            end = time.monotonic() if now is None else now
            self.result = job_result(msg, end - self._t0)
            return JobExited(self.result)
        assert isinstance(msg, Assembled | Started)
        return msg

    def done(self) -> bytes:
        """The frame that tells the helper, after the job's exit, to tear down."""
        if self.result is None:
            raise RuntimeError("Done answers the job's exit")
        self._done = True
        return encode(Done())

    def outcome(self) -> JobResult:
        """The job's result; or the error the helper reported, raised as ours."""
        if self.reported is not None:
            raise_reported(self.reported, self.argv)
        if self.result is None or not self._done:
            raise RuntimeError("the conversation is not over")
        return self.result


#: Arguments longer than this are shown cut, with their length: a job refused
#: for "argument list too long" must not print its megabytes of argv.
_SHOWN_ARG = 1024


def shown_command(argv: Sequence[str]) -> str:
    """``shlex.join(argv)``, each argument over _SHOWN_ARG characters cut and marked."""
    import shlex

    shown = [
        arg if len(arg) <= _SHOWN_ARG else f"{arg[:64]}...[{len(arg)} characters]" for arg in argv
    ]
    return shlex.join(shown)


def raise_reported(msg: Error, argv: Sequence[str]) -> None:
    """Raise the error the helper reported, as ours."""
    cls = _ERRORS.get(msg.category, ExecutorError)
    message = msg.message
    if cls is JobInvalid:
        message += f" (command: {shown_command(argv)})"
    if msg.traceback:
        message += "\n" + msg.traceback
    raise cls(message, hint=msg.hint)


def job_result(msg: Exit, duration: float) -> JobResult:
    """The job's result from the helper's ``Exit``."""
    from repeatr.executors.base import JobResult

    return JobResult(
        msg.code, msg.signal, duration, timed_out=msg.timed_out, oom_killed=msg.oom,
        disk=msg.disk,
    )


class Lines:
    """A job's output stream cut into lines (longer than ``MAX_LINE``: in pieces)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes."""
        buf = self._buf + chunk
        lines = []
        start = 0
        while (i := buf.find(b"\n", start)) >= 0:
            lines.append(buf[start : i + 1])
            start = i + 1
        buf = buf[start:]
        if len(buf) >= MAX_LINE:
            lines.append(buf)
            buf = b""
        self._buf = buf
        return lines

    def end(self) -> list[bytes]:
        """At end of stream: the last line, if it had no newline."""
        rest, self._buf = self._buf, b""
        return [rest] if rest else []


class JobPipes:
    """The job's stdout and stderr: pipes to us, read without blocking, line by line.

    Made before the helper is forked; :meth:`child_fds` are its stdin
    (``/dev/null``), stdout and stderr, closed by :meth:`forked` once the
    helper has its copies.
    """

    def __init__(self) -> None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
        except BaseException:
            os.close(out_r)
            os.close(out_w)
            raise
        self.names = {out_r: "stdout", err_r: "stderr"}
        self._lines = {out_r: Lines(), err_r: Lines()}
        #: The read ends not at their end yet.
        self.open = {out_r, err_r}
        self._child: list[int] = [out_w, err_w]
        try:
            self._child.insert(0, os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
        except BaseException:
            self.close()
            raise
        for fd in self.names:
            os.set_blocking(fd, False)

    @property
    def fds(self) -> tuple[int, int]:
        """The read ends: stdout's, stderr's."""
        out, err = self.names
        return out, err

    def child_fds(self) -> tuple[int, int, int]:
        """The helper's stdin, stdout and stderr."""
        stdin, out_w, err_w = self._child
        return stdin, out_w, err_w

    def forked(self) -> None:
        """Close the helper's ends: it (and the job) has its own now."""
        child, self._child = self._child, []
        for fd in child:
            os.close(fd)

    def read(self, fd: int, limit: int = CHUNK) -> list[tuple[str, bytes]]:
        """What ``fd`` has now, up to ``limit`` bytes, as (stream, line); at its end,
        the last line, and ``fd`` leaves :attr:`open`."""
        name, lines = self.names[fd], self._lines[fd]
        out: list[tuple[str, bytes]] = []
        left = limit
        while left > 0 and fd in self.open:
            try:
                chunk = os.read(fd, min(CHUNK, left))
            except BlockingIOError:
                break
            if not chunk:
                self.open.discard(fd)
                out.extend((name, line) for line in lines.end())
                break
            left -= len(chunk)
            out.extend((name, line) for line in lines.feed(chunk))
        return out

    def drain(self, fd: int) -> list[tuple[str, bytes]]:
        """What the pipe holds now (the job has exited: what it wrote, before its record)."""
        return self.read(fd, DRAIN_LIMIT)

    def close(self) -> None:
        for fd in (*self._child, *self.names):
            os.close(fd)
        self._child = []
        self.names = {}
        self.open = set()
