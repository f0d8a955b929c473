"""The sandbox server's protocol and lifetime, without a job (no root needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import anyio
import pytest

from repeatr.errors import ExecutorError
from repeatr.executors.protocol import Done, Error
from repeatr.executors.server import SandboxServer
from repeatr.executors.spawn import spawn_server
from repeatr.executors.wire import decode, encode
from tests.executors.conftest import children
from tests.rootfs import REPO

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _alive(pid: int) -> bool:
    """Running (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


async def test_helpers_are_forks_of_one_server() -> None:
    async with SandboxServer() as server:
        helpers = []
        for _ in range(3):
            r, w = os.pipe()
            helper = await server.fork(r, w, w)
            os.close(r)
            os.close(w)
            helpers.append(helper)
        assert server.pid is not None and server.starts == 1
        assert sorted(children(server.pid)) == sorted(h.pid for h in helpers)
        for helper in helpers:
            assert not helper.exited()
            helper.control.close()  # no spec will come: the helper exits
            with anyio.fail_after(10):
                await helper.wait()
            helper.close()
        pid = server.pid
    assert not _alive(pid)


def test_a_bad_request_is_answered_with_an_error() -> None:
    process = spawn_server()
    sock = socket.socket(fileno=process.sock)
    process.sock = -1
    try:
        socket.send_fds(sock, [encode(Done())], [])
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        answer = decode(data[4:])
        assert isinstance(answer, Error) and "protocol: done" in answer.message
        assert fds == []
        # Still serving: a fork with too few fds is refused too, and it goes on.
        r, w = os.pipe()
        socket.send_fds(sock, [encode(Done())], [r, w])
        os.close(r)
        os.close(w)
        assert isinstance(decode(socket.recv_fds(sock, 1 << 16, 4)[0][4:]), Error)
        # Bytes that are no message at all (their fd is closed, not kept).
        r, w = os.pipe()
        socket.send_fds(sock, [b"\x00\x00\x00\x03abc"], [w])
        os.close(w)
        assert isinstance(decode(socket.recv_fds(sock, 1 << 16, 4)[0][4:]), Error)
        assert os.read(r, 1) == b""  # the server holds no copy of the write end
        os.close(r)
    finally:
        sock.close()
        process.close()
    assert not _alive(process.pid)


PARENT = r"""
import os, sys, anyio
from repeatr.executors.server import SandboxServer

async def main():
    server = SandboxServer()
    r, w = os.pipe()
    helper = await server.fork(r, w, w)
    print(server.pid, helper.pid, flush=True)
    await anyio.sleep(100)

anyio.run(main)
"""


def test_server_and_helpers_die_with_the_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        server, helper = map(int, parent.stdout.readline().split())
        assert _alive(server) and _alive(helper)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _wait_until(lambda: not _alive(server) and not _alive(helper))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


async def test_a_helper_dies_with_its_server() -> None:
    async with SandboxServer() as server:
        r, w = os.pipe()
        helper = await server.fork(r, w, w)
        os.close(r)
        os.close(w)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        with anyio.fail_after(10):
            await helper.wait()  # PR_SET_PDEATHSIG(SIGTERM) toward the server
        helper.close()
        # Its next request fails as the executor's error (exit 42), not a hang.
        with pytest.raises(ExecutorError):
            await server.fork(0, 1, 2)


async def test_forked_answer_carries_a_pidfd() -> None:
    async with SandboxServer() as server:
        helper = await server.fork(0, 1, 2)
        try:
            assert os.readlink(f"/proc/self/fd/{helper.pidfd}") == "anon_inode:[pidfd]"
            info = await anyio.Path(f"/proc/self/fdinfo/{helper.pidfd}").read_text()
            assert f"Pid:\t{helper.pid}\n" in info
        finally:
            helper.close()
