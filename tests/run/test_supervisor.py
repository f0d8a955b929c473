"""The supervisor in-process, on both anyio backends: same code on asyncio and trio."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.from_thread
import pytest

from repeatr.cache import Cache
from repeatr.errors import Category, RepeatrError
from repeatr.executors.base import load
from repeatr.model.formula import load_formula_file
from repeatr.supervisor import RunEvents, run_formula
from tests.rootfs import processes_with

from .conftest import Runner

pytestmark = [pytest.mark.root, pytest.mark.anyio]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_run_and_outputs(runner: Runner) -> None:
    f = runner.formula(
        "/bin/sh", "-c", "echo hi; mkdir /task/o; echo x > /task/o/f",
        outputs={"/task/o": {"packtype": "tar"}},
    )
    lines: list[tuple[str, bytes]] = []
    outcome = await run_formula(
        load_formula_file(f),
        executor=load("ns")(),
        cache=Cache(runner.state),
        events=RunEvents(output=lambda s, line: lines.append((s, line))),
    )
    assert outcome.record.exit_code == 0
    assert outcome.record.results["/task/o"].startswith("tar:")
    assert ("stdout", b"hi\n") in lines
    assert outcome.fetched == {"/": True}  # first use of a fresh cache: this run unpacked
    assert runner.work_dirs() == []


async def test_cancel_mid_job_tears_down(runner: Runner) -> None:
    marker = "sleep 4444"
    f = runner.formula("/bin/sh", "-c", f"trap '' TERM; {marker}; true")
    with anyio.move_on_after(30) as outer:
        async with anyio.create_task_group() as tg:

            async def cancel_when_running() -> None:
                while not processes_with(marker):  # noqa: ASYNC110 (polling /proc)
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_running)
            await run_formula(load_formula_file(f), executor=load("ns")(), cache=Cache(runner.state))
    assert not outer.cancelled_caught, "the job never started"
    assert not processes_with(marker)
    assert runner.work_dirs() == []


async def test_failed_fetch_is_reported_and_cleaned(runner: Runner, tmp_path: Path) -> None:
    f = runner.formula("/bin/true")
    doc = json.loads(f.read_text())
    doc["context"]["fetchUrls"]["/"] = [f"ca+file://{tmp_path}/empty/"]
    (tmp_path / "empty").mkdir()
    f.write_text(json.dumps(doc))
    with pytest.raises(RepeatrError) as err:
        await run_formula(load_formula_file(f), executor=load("ns")(), cache=Cache(runner.state))
    assert err.value.category is Category.WARE_NOT_FOUND
    assert runner.work_dirs() == []


async def test_cancel_during_pack_stops_the_pack(runner: Runner) -> None:
    """A cancelled run stops packing within 8 MiB instead of packing a 64 GiB output."""
    f = runner.formula(
        "/bin/sh", "-c", "mkdir /task/o; truncate -s 64G /task/o/sparse",
        outputs={"/task/o": {"packtype": "tar"}},
    )
    packed: list[int] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:

            def progress(phase: str, done: int) -> None:  # in the packing worker thread
                if phase == "pack":
                    packed.append(done)
                    anyio.from_thread.run_sync(tg.cancel_scope.cancel)

            await run_formula(
                load_formula_file(f),
                executor=load("ns")(),
                cache=Cache(runner.state),
                events=RunEvents(progress=progress),
            )
    assert packed and max(packed) < 1 << 30, packed  # stopped long before the end
    assert runner.work_dirs() == []
