"""The conformance suite's formula-level half: every executor through the library runner.

``tests/executors/test_conformance.py`` drives executors with job specs
directly (mounts, capabilities and layers a formula cannot express). Here
the same promises are checked the way every command and scheduler runs a
job: a formula file through ``repeatr.runner.run.run`` (memo decision off,
executor by name, the supervisor, the sandbox server, the record), on
every executor this host has and on both anyio backends. Each test checks
the host is left as found (work dirs, the job's processes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.executors.base import Capabilities, Isolation, available_names
from repeatr.runner.run import RunnerEvents, RunOptions, RunResult, run
from tests.executors.conftest import usable
from tests.rootfs import processes_with

from .conftest import Runner

pytestmark = [pytest.mark.root, pytest.mark.anyio]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=[pytest.param(str(n), marks=pytest.mark.runtime(str(n))) for n in available_names()]
)
def executor(request: pytest.FixtureRequest) -> str:
    usable(request.param)  # skipped (failed in CI) when this host cannot run it
    return str(request.param)


class Via:
    """Runs formulas on one executor through the library runner; collects their output."""

    def __init__(self, runner: Runner, executor: str) -> None:
        self.runner = runner
        self.executor = executor
        self.caps: Capabilities = usable(executor).capabilities()
        self.stdout = b""
        self.stderr = b""

    async def run(self, *argv: str, **formula: Any) -> RunResult:
        self.stdout = self.stderr = b""

        def output(stream: str, line: bytes) -> None:
            if stream == "stdout":
                self.stdout += line
            else:
                self.stderr += line

        name = f"{uuid.uuid4().hex[:8]}.json"
        f = self.runner.formula(*argv, name=name, **formula)
        options = RunOptions(state=self.runner.state, executor=self.executor, use_memo=False)
        return await run(str(f), options, RunnerEvents(output=output))

    async def sh(self, script: str, **formula: Any) -> RunResult:
        return await self.run("/bin/sh", "-c", script, **formula)


@pytest.fixture
def via(runner: Runner, executor: str) -> Iterator[Via]:
    yield Via(runner, executor)
    assert runner.work_dirs() == [], "a run left its work dir"


@pytest.mark.parametrize("code", [0, 3])
async def test_stdout_stderr_and_exit_code(via: Via, code: int) -> None:
    result = await via.sh(f"echo hello; echo oops >&2; echo world; exit {code}")
    assert result.exit_code == code and result.record["exitCode"] == code
    assert (via.stdout, via.stderr) == (b"hello\nworld\n", b"oops\n")
    assert result.record["executor"] == via.executor
    assert not result.memo_hit


async def test_env_as_given(via: Via) -> None:
    env = {"ZED": "last first", "PATH": "/bin:/usr/bin", "A": "1", "EMPTY": ""}
    result = await via.run("env", env=env)  # found on the env's PATH
    assert result.exit_code == 0
    # The formula's defaults add HOME and USER (repeatr.model.defaults), on every executor.
    expected = {f"{k}={v}" for k, v in env.items()} | {"HOME=/home/reuser", "USER=reuser"}
    assert set(via.stdout.decode().splitlines()) == expected


async def test_cwd_default_and_explicit(via: Via) -> None:
    assert (await via.sh("pwd")).exit_code == 0 and via.stdout == b"/task\n"
    assert (await via.sh("pwd", cwd="/tmp")).exit_code == 0 and via.stdout == b"/tmp\n"


async def test_userinfo_default_and_custom(via: Via) -> None:
    await via.sh("id -u; id -g")
    assert via.stdout == b"1000\n1000\n"
    await via.sh("id -u; id -g", userinfo={"uid": 4242, "gid": 4343})
    assert via.stdout == b"4242\n4343\n"
    await via.sh("id -u", userinfo={"uid": 0, "gid": 0})
    assert via.stdout == b"0\n"


async def test_hostname(via: Via) -> None:
    if not via.caps.hostname:
        with pytest.raises(RepeatrError) as err:
            await via.run("/bin/hostname", hostname="conform")
        assert err.value.category is Category.EXECUTOR
        return
    result = await via.run("/bin/hostname", hostname="conform")
    assert result.exit_code == 0 and via.stdout == b"conform\n"


async def test_pid_namespace(via: Via) -> None:
    await via.sh("echo $$")
    assert (int(via.stdout) == 1) == (Isolation.PID in via.caps.isolates)


async def test_network_none_has_only_loopback(via: Via) -> None:
    if "none" not in via.caps.networks:
        pytest.skip(f"{via.executor} gives jobs the host's network only")
    result = await via.sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    assert result.exit_code == 0 and via.stdout.split() == [b"lo"]
    assert result.record["network"] == "none"


async def test_output_is_packed(via: Via) -> None:
    out = {"/task/out": {"packtype": "tar"}}
    result = await via.sh("mkdir -p out && echo data > out/file", outputs=out)
    assert result.exit_code == 0, via.stderr
    results = result.record["results"]
    assert isinstance(results, dict) and results["/task/out"].startswith("tar:")
    empty = await via.sh("mkdir -p out", outputs=out)
    assert isinstance(empty.record["results"], dict)
    assert empty.record["results"]["/task/out"] != results["/task/out"]


async def test_missing_exec_is_job_invalid(via: Via) -> None:
    with pytest.raises(RepeatrError) as err:
        await via.run("/no/such/exec")
    assert err.value.category is Category.JOB_INVALID


async def test_cancel_tears_down(via: Via) -> None:
    """Cancelled once the job runs (it said so): nothing of it is left (work dir: ``via``)."""
    marker = f"sleep 47{uuid.uuid4().int % 1000:03d}"
    with anyio.move_on_after(60) as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_when_running() -> None:
                while b"started" not in via.stdout:  # noqa: ASYNC110 (the job's output)
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_running)
            await via.sh(f"echo started; {marker}; echo never")
    assert not scope.cancelled_caught, "the job never started"
    assert not processes_with(marker)  # (gVisor's are not host processes: none either way)
    assert via.stdout == b"started\n"

