"""The sandbox server's protocol and lifetime, without a job (no root needed)."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from repeatr.errors import ExecutorError
from repeatr.executors.protocol import Done, Error
from repeatr.executors.server import BlockingServer, SandboxServer
from repeatr.executors.spawn import isolated_path, spawn_server
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
from repeatr.executors.server import BlockingServer, SandboxServer

async def main():
    server = SandboxServer()
    r, w = os.pipe()
    helper = await server.fork(r, w, w)
    print(server.pid, helper.pid, flush=True)
    await anyio.sleep(100)

anyio.run(main)
"""


@contextlib.contextmanager
def _parent(script: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """A parent process running ``script``, and the pids it printed on its first line;
    killed (if still alive) on the way out."""
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        yield parent, [int(pid) for pid in parent.stdout.readline().split()]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def _kill(parent: subprocess.Popen[str]) -> None:
    parent.send_signal(signal.SIGKILL)
    parent.wait()


def test_server_and_helpers_die_with_the_parent() -> None:
    with _parent(PARENT) as (parent, (server, helper)):
        assert _alive(server) and _alive(helper)
        _kill(parent)
        _wait_until(lambda: not _alive(server) and not _alive(helper))


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


FORKING_PARENT = """
import anyio, os, sys
import repeatr.executors.forkserver
from repeatr.executors.server import BlockingServer, SandboxServer
from repeatr.executors.spawn import fork_server

process = fork_server()  # single-threaded here: nothing has started a thread

async def main():
    server = SandboxServer(prestarted=process)
    r, w = os.pipe()
    helper = await server.fork(r, w, w)
    print(server.pid, helper.pid, flush=True)
    await anyio.sleep(100)

anyio.run(main)
"""


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip()


def test_a_forked_server_serves_and_dies_with_the_parent() -> None:
    with _parent(FORKING_PARENT) as (parent, (server, helper)):
        assert _alive(server) and _alive(helper)
        assert _comm(server) == _comm(helper) == "repeatr-sandbox"
        with open(f"/proc/{server}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[1]) == parent.pid and int(fields[3]) == server  # a session of its own
        _kill(parent)
        _wait_until(lambda: not _alive(server) and not _alive(helper))


THREADED = """
import sys, threading
from repeatr.executors.spawn import fork_server, single_threaded

event = threading.Event()
threading.Thread(target=event.wait).start()
assert not single_threaded()
try:
    fork_server()
except RuntimeError as e:
    print(e)
if sys.argv[1] == "prestart":
    from repeatr.cli.entry import prestart_server

    process = prestart_server(["run", "f.json"])
    assert process is not None
    import time

    deadline = time.monotonic() + 20  # until it has exec'd (a forked one never does)
    while time.monotonic() < deadline:
        with open(f"/proc/{process.pid}/cmdline", "rb") as f:
            spawned = b"repeatr.executors.forkserver" in f.read()
        if spawned:
            break
        time.sleep(0.01)
    print(spawned)
    process.close()
event.set()
"""


def test_fork_server_refuses_a_threaded_process() -> None:
    """Forking copies locks other threads may hold: a threaded caller gets an error, no child."""
    res = subprocess.run(
        [sys.executable, "-c", THREADED, "fork"], capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "this process has threads" in res.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the CLI starts a server only as root")
def test_the_cli_spawns_its_server_once_a_thread_runs() -> None:
    res = subprocess.run(
        [sys.executable, "-c", THREADED, "prestart"], capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "True"  # spawned: the helper's own command line


PRESTART = """
import time
from repeatr.cli.entry import prestart_server
from repeatr.executors.spawn import interpreter_options

print(" ".join(interpreter_options()))
process = prestart_server(["run", "f.json"])
assert process is not None
with open("/proc/self/cmdline", "rb") as f:
    ours = f.read()
deadline = time.monotonic() + 20  # until it has exec'd (a forked one never does)
while time.monotonic() < deadline:
    with open(f"/proc/{process.pid}/cmdline", "rb") as f:
        spawned = f.read() != ours
    if spawned:
        break
    time.sleep(0.01)
print(spawned)
process.close()
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the CLI starts a server only as root")
@pytest.mark.parametrize(
    ("options", "spawned"),
    [((), "False"), (("-O",), "True"), (("-W", "error"), "True"), (("-X", "dev"), "True"),
     (("-X", "importtime"), "True")],
)
def test_the_cli_spawns_a_clean_server_when_its_interpreter_has_options(
    options: tuple[str, ...], spawned: str
) -> None:
    """A fork would hand -O (no asserts), -W error, dev mode... to the code building sandboxes."""
    res = subprocess.run(
        [sys.executable, *options, "-c", PRESTART], capture_output=True, text=True, cwd=REPO,
        timeout=60, check=False, env={**os.environ, "PYTHONWARNINGS": ""},
    )
    assert res.returncode == 0, res.stderr
    found, answer = res.stdout.splitlines()[-2:]
    assert answer == spawned, found
    assert bool(found) == (spawned == "True")


def test_a_forked_server_imports_from_where_a_spawned_one_would() -> None:
    """``isolated_path``: what ``python -I -S`` has, then repeatr's parent dir; no cwd, no site."""
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import sys; print(repr(sys.path))"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    assert isolated_path() == [*ast.literal_eval(res.stdout), str(REPO)]


async def test_limit_jobs_holds_a_fork_until_a_place_is_free() -> None:
    """``limit_jobs(1)``: a second fork waits until the first helper's job is over
    (``release``), then gets its helper; a closed helper gives its place back too."""
    async with SandboxServer(jobs=1) as server:
        first = await server.fork(0, 1, 2)
        got: list[int] = []

        async def second() -> None:
            helper = await server.fork(0, 1, 2)
            got.append(helper.pid)
            helper.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert got == [], "forked past the bound"
            assert sorted(children(server.pid or 0)) == [first.pid]
            first.release()  # the job is over: its place is free (the helper may still exit)
            first.release()  # once only: a second call gives back nothing more
        assert len(got) == 1 and got[0] != first.pid
        first.close()
        assert server.jobs == 1
        with anyio.fail_after(10):  # every place is free again: this fork does not wait
            third = await server.fork(0, 1, 2)
        third.close()


async def test_places_go_in_turn_order() -> None:
    """With one place (``-j 1``), a fork of turn 1 waits for turn 0 (the place free)
    until turn 0 has had its place or is passed (a memo hit, an error)."""
    from repeatr.executors.server import JOB_TURN

    async with SandboxServer(jobs=1) as server:
        got: list[int] = []

        async def fork_in_turn(turn: int) -> None:
            JOB_TURN.set(turn)  # this task's own context
            helper = await server.fork(0, 1, 2)
            got.append(turn)
            helper.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(fork_in_turn, 1)
            await anyio.wait_all_tasks_blocked()
            assert got == [], "turn 1 forked before turn 0"
            server.pass_turn(0)  # turn 0 will not fork
        assert got == [1]
        server.pass_turn(0)  # again: nothing changes
        with anyio.fail_after(10):
            await fork_in_turn(2)  # its turn has come
        assert got == [1, 2]


async def test_a_slow_turn_does_not_hold_every_place() -> None:
    """With -j 2 and turn 0 still preparing (a slow fetch), turn 1 takes the spare
    place; turn 2 then waits: the place left is turn 0's, which takes it when ready."""
    from repeatr.executors.server import JOB_TURN

    async with SandboxServer(jobs=2) as server:
        got: list[int] = []
        helpers = []

        async def fork_in_turn(turn: int) -> None:
            JOB_TURN.set(turn)
            helpers.append(await server.fork(0, 1, 2))
            got.append(turn)

        async def until(want: list[int]) -> None:
            while got != want:  # noqa: ASYNC110 (a fork also waits on the server: polled)
                await anyio.sleep(0.01)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(fork_in_turn, 1)
                await until([1])  # did not wait for the slow turn 0: a place was free
                tg.start_soon(fork_in_turn, 2)
                await anyio.sleep(0.5)
                assert got == [1], "turn 2 took the place turn 0 still needs"
                tg.start_soon(fork_in_turn, 0)  # turn 0 is ready: the kept place is its
                await until([1, 0])
                helpers.pop(0).close()  # turn 1's job ends: turn 2 goes
            assert got == [1, 0, 2]
        for helper in helpers:
            helper.close()


def test_a_last_fork_makes_the_server_the_helper() -> None:
    """A single run's one job (``Fork(last=True)``): the server becomes its helper, no
    fork; then serves nothing else, and exits with the job's end."""
    server = BlockingServer(spawn_server())
    try:
        r, w = os.pipe()
        helper = server.fork(r, w, w, last=True)
        os.close(r)
        os.close(w)
        assert helper.pid == server.pid
        assert children(server.pid) == []
        with pytest.raises(ExecutorError):
            server.fork(0, 1, 2)
        helper.control.close()  # no spec will come: the helper (the server) exits
        _wait_until(helper.exited)
        helper.close()
    finally:
        server.close()
    assert not _alive(helper.pid)


def test_a_last_fork_beside_a_running_helper_forks() -> None:
    server = BlockingServer(spawn_server())
    helpers = []
    try:
        for last in (False, True):
            r, w = os.pipe()
            helpers.append(server.fork(r, w, w, last=last))
            os.close(r)
            os.close(w)
        assert server.pid not in {h.pid for h in helpers}
        assert sorted(children(server.pid)) == sorted(h.pid for h in helpers)
    finally:
        for helper in helpers:
            helper.control.close()
            _wait_until(helper.exited)
            helper.close()
        server.close()


LAST_PARENT = """
import os, time
import repeatr.executors.forkserver
from repeatr.executors.server import BlockingServer
from repeatr.executors.spawn import fork_server

server = BlockingServer(fork_server())
r, w = os.pipe()
helper = server.fork(r, w, w, last=True)
print(helper.pid, flush=True)
time.sleep(100)
"""


def test_a_server_become_helper_dies_with_the_parent() -> None:
    with _parent(LAST_PARENT) as (parent, (helper,)):
        assert _alive(helper) and _comm(helper) == "repeatr-sandbox"
        _kill(parent)
        _wait_until(lambda: not _alive(helper))
