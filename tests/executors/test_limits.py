"""Resource limits, enforced for real: timeout, memory (OOM), pids (fork bomb), cpu.

Every executor that says it enforces a limit (``Capabilities.limits``) is
held to it; one that does not must refuse a job asking for it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import msgspec
import pytest

from repeatr.assemble.ops import Overlay
from repeatr.errors import Category, ExecutorError
from repeatr.executors.base import Executor, JobSpec, available_names
from repeatr.linux import cgroups
from repeatr.model.limits import LimitName, Limits
from tests.executors.conftest import Jobs, Outcome, usable
from tests.rootfs import processes_with

pytestmark = [pytest.mark.root, pytest.mark.anyio]


def enforcing(limit: LimitName) -> list[object]:
    """Executors (as params) whose capabilities include ``limit``."""
    return [
        pytest.param(str(n), marks=pytest.mark.runtime(str(n)))
        for n in available_names()
        if limit in _caps(str(n))
    ]


def _caps(name: str) -> frozenset[LimitName]:
    from repeatr.executors.base import load

    return load(name)().capabilities().limits


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> Executor:
    return usable(request.param)


@pytest.mark.parametrize("executor", enforcing(LimitName.TIMEOUT), indirect=True)
async def test_timeout_kills_the_job_on_time(jobs: Jobs) -> None:
    marker = f"repeatr-timeout-{uuid.uuid4().hex}"
    started = 0.0

    async def on_output(stream: str, line: bytes) -> None:
        nonlocal started
        started = started or time.monotonic()

    # Timed from the job's first line: the timeout is the job's, not its executor's
    # start-up (a VM boots first, for seconds under TCG).
    job = jobs.job("sh", "-c", "echo started; sleep 1000 & sleep 1000", marker,
                   limits=Limits(timeout=1))
    result = await jobs.executor.run(job, on_output=on_output)
    elapsed = time.monotonic() - started
    assert started, "the job never started"
    assert result.timed_out
    assert result.reason == "timeout"
    assert (result.exit_code, result.signal) == (137, 9)
    assert elapsed < 2.0, f"took {elapsed:.2f}s for a 1s timeout"
    assert processes_with(jobs.on_host(marker) or marker) == []


@pytest.mark.parametrize("executor", enforcing(LimitName.TIMEOUT), indirect=True)
async def test_timeout_not_reached(jobs: Jobs) -> None:
    out = await jobs.sh("echo quick", limits=Limits(timeout=30))
    assert (out.result.exit_code, out.result.timed_out, out.stdout) == (0, False, b"quick\n")


MEMORY_HOG = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}"


@pytest.mark.parametrize("executor", enforcing(LimitName.MEMORY), indirect=True)
async def test_memory_exceeded_is_killed_and_reported(jobs: Jobs) -> None:
    out = await jobs.sh(MEMORY_HOG, limits=Limits(memory="32M"))
    assert out.result.oom_killed
    assert out.result.reason == "out of memory"
    assert out.result.exit_code == 137
    assert b"survived" not in out.stdout


@pytest.mark.parametrize("executor", enforcing(LimitName.MEMORY), indirect=True)
async def test_memory_within_limit(jobs: Jobs) -> None:
    out = await jobs.sh("x=$(head -c 1048576 /dev/zero | tr '\\0' a); echo ${#x}",
                        limits=Limits(memory=64 << 20))
    assert (out.result.exit_code, out.result.oom_killed, out.stdout) == (0, False, b"1048576\n")


@pytest.mark.parametrize("executor", enforcing(LimitName.PIDS), indirect=True)
async def test_pids_limit_stops_forks(jobs: Jobs) -> None:
    out = await jobs.sh("for i in $(seq 60); do sleep 30 & done; echo all started",
                        limits=Limits(pids=20, timeout=20))
    assert out.result.exit_code != 0
    assert not out.result.timed_out
    assert b"all started" not in out.stdout
    assert b"fork" in out.stderr  # busybox: "can't fork: Resource temporarily unavailable"


@pytest.mark.slow
@pytest.mark.parametrize("executor", enforcing(LimitName.PIDS), indirect=True)
async def test_pids_limit_contains_a_fork_bomb(jobs: Jobs) -> None:
    marker = f"repeatr-bomb-{uuid.uuid4().hex}"
    out = await jobs.run(jobs.job("sh", "-c", "f(){ f | f & }; f; sleep 1000", marker,
                                  limits=Limits(pids=50, timeout=3)))
    assert out.result.timed_out
    # Every process of the bomb is a fork of that shell, with its command line
    # (and the marker): none is left. (Counting /proc against before was flaky:
    # other sessions on the host start and end processes meanwhile.)
    assert processes_with(marker) == []


#: The loop's own time, in hundredths of a second (from /proc/uptime): a VM's boot
#: or any executor's start-up is not the job's CPU.
CPU_LOOP = (
    "read t0 _ </proc/uptime; i=0; while [ $i -lt 50000 ]; do i=$((i+1)); done; "
    "read t1 _ </proc/uptime; echo $t0 $t1"
)


def _loop_seconds(out: Outcome) -> float:
    t0, t1 = (float(t) for t in out.stdout.split())
    return t1 - t0


@pytest.mark.slow
@pytest.mark.parametrize("executor", enforcing(LimitName.CPU), indirect=True)
async def test_cpu_limit_slows_a_busy_loop(jobs: Jobs) -> None:
    free = await jobs.sh(CPU_LOOP)
    limited = await jobs.sh(CPU_LOOP, limits=Limits(cpu=0.1, timeout=300))
    assert free.result.exit_code == limited.result.exit_code == 0
    free_s, limited_s = _loop_seconds(free), _loop_seconds(limited)
    assert limited_s > 3 * free_s, f"{limited_s:.2f}s at 0.1 cores vs {free_s:.2f}s free"


REFUSING = [
    pytest.param(str(n), limit, marks=pytest.mark.runtime(str(n)))
    for n in available_names()
    for limit in LimitName
    if limit not in _caps(str(n))
]


@pytest.mark.parametrize(("name", "limit"), REFUSING)
async def test_refuses_a_limit_it_cannot_enforce(
    jobs_for: object, name: str, limit: LimitName
) -> None:
    assert callable(jobs_for)
    jobs: Jobs = jobs_for(name)
    value = {"memory": "64M", "pids": 10, "cpu": 1.0, "timeout": 10.0}[limit.value]
    marker = f"repeatr-refused-{uuid.uuid4().hex}"
    with pytest.raises(ExecutorError) as info:
        await jobs.run(jobs.job("sh", "-c", "echo ran", marker,
                                limits=Limits(**{limit.value: value})))
    assert info.value.category == Category.EXECUTOR
    assert limit.value in info.value.message
    assert processes_with(marker) == []


@pytest.fixture
def jobs_for(area: object, workdir: object) -> object:
    from pathlib import Path

    from tests.rootfs import ScratchArea

    assert isinstance(area, ScratchArea) and isinstance(workdir, Path)

    def make(name: str) -> Jobs:
        return Jobs(area, workdir, usable(name))

    return make


def test_gc_removes_groups_of_dead_runs() -> None:
    if "pids" not in cgroups.controllers():
        pytest.skip("no v1 pids controller")
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that is (almost certainly) not reused in the next instant
    name = f"{cgroups.PREFIX}{child.pid}-deadbeef00"
    live = cgroups.new_name(os.getpid())
    os.mkdir(os.path.join(cgroups.ROOT, "pids", name))
    os.mkdir(os.path.join(cgroups.ROOT, "pids", live))
    try:
        removed = cgroups.gc()
        assert os.path.join(cgroups.ROOT, "pids", name) in removed
        assert not os.path.exists(os.path.join(cgroups.ROOT, "pids", name))
        assert os.path.exists(os.path.join(cgroups.ROOT, "pids", live))  # its owner lives
    finally:
        cgroups.remove_dir(os.path.join(cgroups.ROOT, "pids", name))
        cgroups.remove_dir(os.path.join(cgroups.ROOT, "pids", live))


# --- the formula side: parsing, validation, formula ID ---------------------------

FORMULA = b"""{"formula": {"inputs": {"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"},
 "action": {"exec": ["/bin/true"]%s}}}"""


def _formula_id(limits: str) -> str:
    from repeatr.model.formula import load_formula_bytes
    from repeatr.model.formula_id import formula_id

    extra = f', "limits": {limits}' if limits else ""
    return formula_id(load_formula_bytes(FORMULA % extra.encode(), "f.json").formula)


def test_limits_change_the_formula_id_only_when_present() -> None:
    from repeatr.model.formula import Action, Formula
    from repeatr.model.formula_id import formula_id

    bare = Formula(inputs={"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"},
                   action=Action(exec=("/bin/true",)))
    assert _formula_id("") == formula_id(bare)
    limited = _formula_id('{"memory": "64M", "timeout": 10}')
    assert limited != formula_id(bare)
    assert limited == _formula_id('{"timeout": 10.0, "memory": 67108864}')
    assert _formula_id('{"cpu": 1}') == _formula_id('{"cpu": 1.0}')
    assert _formula_id('{"cpu": 1}') != _formula_id('{"cpu": 2}')
    assert _formula_id("{}") not in (formula_id(bare), limited)
    # disk: absent keeps every ID; "16M" and 16777216 are the same limit.
    assert _formula_id('{"memory": "64M", "timeout": 10, "disk": "16M"}') not in (
        formula_id(bare), limited)
    assert _formula_id('{"disk": "16M"}') == _formula_id('{"disk": 16777216}')
    assert _formula_id('{"disk": "16M"}') != _formula_id('{"disk": "32M"}')


@pytest.mark.parametrize("bad", ['{"memory": "lots"}', '{"memory": 10}', '{"pids": 0}',
                                 '{"timeout": -1}', '{"cpu": 0}', '{"swap": 1}',
                                 '{"disk": "lots"}', '{"disk": "1M"}'])
def test_bad_limits_are_usage_errors(bad: str) -> None:
    from repeatr.errors import UsageError

    with pytest.raises(UsageError):
        _formula_id(bad)


# --- disk: limits.disk is a filesystem of that size under every writable layer --------

def _loop_backing_files() -> list[str]:
    """The files every attached loop device reads from (the host's view)."""
    found = []
    for dev in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                found.append(f.read().strip())
        except OSError:
            continue
    return found


def _writes_under_rw(jobs: Jobs, job: JobSpec) -> JobSpec:
    """The job with its root overlay's upper and work dirs under ``rw`` (as the run puts them)."""
    root = job.mounts[0]
    assert isinstance(root, Overlay)
    moved = Overlay(root.lowers, "/", os.fspath(job.rw / "upper"), os.fspath(job.rw / "work"))
    return msgspec.structs.replace(job, mounts=(moved, *job.mounts[1:]))


@pytest.mark.parametrize("executor", enforcing(LimitName.DISK), indirect=True)
async def test_disk_limit_gives_the_job_enospc_and_says_why(jobs: Jobs) -> None:
    job = jobs.job("sh", "-c", "head -c 40000000 /dev/zero > /task/big; echo wrote $?; exit 3",
                   limits=Limits(disk="16M"))
    out = await jobs.run(_writes_under_rw(jobs, job))
    assert out.result.exit_code == 3
    assert out.result.disk == "limit" and out.result.reason == "disk limit"
    assert b"wrote 1" in out.stdout  # head's write failed
    assert b"No space left on device" in out.stderr or b"I/O error" in out.stderr
    assert not [f for f in _loop_backing_files() if f.startswith(os.fspath(jobs.workdir))]


@pytest.mark.parametrize("executor", enforcing(LimitName.DISK), indirect=True)
async def test_disk_within_the_limit(jobs: Jobs) -> None:
    job = jobs.job("sh", "-c", "head -c 4000000 /dev/zero > /task/big && wc -c < /task/big",
                   limits=Limits(disk="16M"))
    out = await jobs.run(_writes_under_rw(jobs, job))
    assert (out.result.exit_code, out.result.disk, out.stdout.strip()) == (0, "", b"4000000")
    assert not (jobs.workdir / "rw" / "upper" / "task" / "big").exists()  # it was on the job's disk
