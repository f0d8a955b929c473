"""The sandbox server: one process forks every job's helper; each job stays its own."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from repeatr.errors import ExecutorError
from repeatr.executors.base import Executor, load
from repeatr.executors.helper import HelperExecutor
from repeatr.executors.server import SandboxServer
from tests.executors.conftest import Jobs, Outcome, children, usable
from tests.rootfs import ScratchArea, processes_with, remove_tree

pytestmark = [pytest.mark.root, pytest.mark.anyio]


async def _until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not predicate():  # noqa: ASYNC110 (polling /proc)
            await anyio.sleep(0.02)


def _on(server: SandboxServer, name: str) -> Executor:
    ex = usable(name)
    assert isinstance(ex, HelperExecutor)
    return load(name)(server=server)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["ns", "runc"])
async def test_cancelling_one_job_leaves_the_others(area: ScratchArea, name: str) -> None:
    """SIGTERM reaches that job's helper only: its tree goes, the server and the rest go on."""
    long_sleep = f"sleep {random.randint(3000, 9999)}"  # the cancelled job's, unique
    workdirs = [area.new_workdir() for _ in range(3)]
    outcomes: dict[int, Outcome] = {}
    try:
        async with SandboxServer() as server:
            ex = _on(server, name)

            async def one(i: int, scope: anyio.CancelScope) -> None:
                with scope:
                    script = f"{long_sleep if i == 0 else 'sleep 3'}; echo done {i}"
                    outcomes[i] = await Jobs(area, workdirs[i], ex).sh(script)

            scopes = [anyio.CancelScope() for _ in range(3)]
            async with anyio.create_task_group() as tg:
                for i, scope in enumerate(scopes):
                    tg.start_soon(one, i, scope)
                await _until(lambda: bool(processes_with(long_sleep))
                             and len(children(server.pid or 0)) == 3)
                helpers = set(children(server.pid or 0))
                scopes[0].cancel()
                await _until(lambda: not processes_with(long_sleep)
                             and len(set(children(server.pid or 0)) & helpers) == 2)
                # The cancelled job and its helper are gone; the others still run.
                assert len(set(children(server.pid or 0)) & helpers) == 2
                assert 1 not in outcomes and 2 not in outcomes
            assert sorted(outcomes) == [1, 2]
            for i in (1, 2):
                assert outcomes[i].result.exit_code == 0
                assert outcomes[i].stdout == f"done {i}\n".encode()
            await _until(lambda: children(server.pid or 0) == [])  # reaped by the server
    finally:
        for wd in workdirs:
            remove_tree(wd)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def test_one_server_for_many_jobs(area: ScratchArea) -> None:
    """Jobs in a row and at once: every helper is a child of the one server."""
    workdirs = [area.new_workdir() for _ in range(6)]
    parents: set[int] = set()
    try:
        async with SandboxServer() as server:
            ex = _on(server, "ns")

            async def one(wd: Path) -> None:
                out = await Jobs(area, wd, ex).sh("echo $$")
                assert out.result.exit_code == 0
                assert out.stdout == b"1\n"  # PID 1 of its own namespace, as ever

            async with anyio.create_task_group() as tg:
                for wd in workdirs[:4]:
                    tg.start_soon(one, wd)
            for wd in workdirs[4:]:
                await one(wd)
            parents.add(server.pid or 0)
            assert server.starts == 1
            pid = server.pid
        assert pid is not None and not await anyio.Path(f"/proc/{pid}").exists()
    finally:
        for wd in workdirs:
            remove_tree(wd)


async def test_a_closed_server_refuses_jobs(area: ScratchArea, workdir: Path) -> None:
    server = SandboxServer()
    await server.aclose()
    ex = _on(server, "ns")
    with pytest.raises(ExecutorError, match="closed"):
        await Jobs(area, workdir, ex).sh("true")


async def test_a_job_dies_with_its_server(area: ScratchArea, workdir: Path) -> None:
    """SIGKILL of the server alone: its helper still kills the job, cleans up, and the
    run fails as the executor's error."""
    long_sleep = f"sleep {random.randint(3000, 9999)}"
    async with SandboxServer() as server:
        ex = _on(server, "ns")

        async def kill_server() -> None:
            await _until(lambda: bool(processes_with(long_sleep)))
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)

        async with anyio.create_task_group() as tg:
            tg.start_soon(kill_server)
            with pytest.raises(ExecutorError):
                await Jobs(area, workdir, ex).sh(long_sleep)
        assert not processes_with(long_sleep)
