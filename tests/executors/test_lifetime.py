"""A job outlives the spawning thread: trio starts processes from worker
threads that exit after 10 s idle, so nothing may hang on that thread's life
(PR_SET_PDEATHSIG would: it follows the parent *thread*)."""

from __future__ import annotations

import anyio
import pytest

from repeatr.executors.base import Executor, JobResult, available_names, load
from tests.executors.conftest import Jobs
from tests.rootfs import ScratchArea, remove_tree

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def test_job_outlives_trio_spawn_thread(area: ScratchArea) -> None:
    results: dict[str, JobResult] = {}
    workdirs = []

    async def one(ex: Executor) -> None:
        wd = area.new_workdir()
        workdirs.append(wd)
        results[ex.name] = (await Jobs(area, wd, ex).sh("sleep 12; echo alive")).result

    try:
        async with anyio.create_task_group() as tg:
            for name in available_names():
                if name != "vm":  # its helper is the same; a VM boot here costs a core for seconds
                    tg.start_soon(one, load(name)())
    finally:
        for wd in workdirs:
            remove_tree(wd)
    assert {r.exit_code for r in results.values()} == {0}
