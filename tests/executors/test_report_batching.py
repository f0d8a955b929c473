"""The helper's reports in as few writes as the protocol allows (a batch's per-job CPU)."""

from __future__ import annotations

import os
import select
import socket

from repeatr.executors.protocol import Assembled, Error, Started
from repeatr.executors.sandbox import Control
from repeatr.executors.wire import read_frame, write_frames
from repeatr.linux import capability


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def test_write_frames_is_one_write_read_back_in_order() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        write_frames(ours.fileno(), [Assembled(pid=1), Started(pid=2)])
        assert read_frame(theirs.fileno()) == Assembled(pid=1)
        assert read_frame(theirs.fileno()) == Started(pid=2)


def test_assembled_is_held_until_the_next_report() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        control = Control(ours.fileno(), None)
        control.hold(Assembled(pid=1))
        assert not _readable(theirs.fileno())  # the parent is not woken for it alone
        control.report(Started(pid=2))
        theirs.setblocking(False)
        data = theirs.recv(1 << 16)  # both, in one read
        r, w = os.pipe()
        try:
            os.write(w, data)
            os.close(w)
            assert read_frame(r) == Assembled(pid=1)
            assert read_frame(r) == Started(pid=2)
            assert read_frame(r) is None
        finally:
            os.close(r)


def test_a_held_report_goes_before_an_error() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        control = Control(ours.fileno(), None)
        control.hold(Assembled(pid=1))
        control.report(Error(category="EXECUTOR", message="no"))
        assert read_frame(theirs.fileno()) == Assembled(pid=1)
        assert isinstance(read_frame(theirs.fileno()), Error)


def test_cap_last_cap_is_read_once() -> None:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capability.running_last_cap() == int(f.read())
    assert capability._running_last_cap == [capability.running_last_cap()]
