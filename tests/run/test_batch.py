"""Batches: many formulas in one invocation (``repeatr run F1 F2 ...``, ``repeatr run -``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from repeatr.cache.shared import SharedCache
from repeatr.errors import Category
from repeatr.runner.batch import BatchItem, BatchOptions, most_severe, run_batch
from repeatr.runner.run import RunnerEvents, RunOptions
from tests.rootfs import mountinfo, processes_with

from .conftest import Busybox, Runner, wait_for

pytestmark = pytest.mark.root


def _sleeping(marker: str) -> int:
    """How many jobs run ``marker`` (a ``sleep N``) now: the sleeps, not their shells."""
    count = 0
    for pid in processes_with(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                count += f.read().startswith(b"sleep\0")
        except OSError:
            pass
    return count


def _mounts_of(runner: Runner) -> list[str]:
    """Mounts on the host under the runner's state or files (other sessions' mounts vary)."""
    mine = (os.fspath(runner.state), os.fspath(runner.dir))
    return [line for line in mountinfo() if any(p in line for p in mine)]


def _mixed(runner: Runner, n: int) -> dict[str, str]:
    """``n`` formula files: successes, job failures, bad JSON, missing files; file -> kind."""
    kinds: dict[str, str] = {}
    for i in range(n):
        kind = ("ok", "ok", "fail", "ok", "bad", "ok", "missing", "fail")[i % 8]
        name = f"f{i:03d}.json"
        if kind == "ok":
            path = runner.formula("/bin/sh", "-c", f"echo {i}", name=name)
        elif kind == "fail":
            path = runner.formula("/bin/sh", "-c", f"exit {3 + i % 5}", name=name)
        elif kind == "bad":
            path = runner.dir / name
            path.write_text('{"formula": {"action": {"exec": ["/bin/true"], "bogus": 1}}}')
        else:
            path = runner.dir / name  # never written
        kinds[str(path)] = kind
    return kinds


def test_batch_of_64_mixed(runner: Runner) -> None:
    kinds = _mixed(runner, 64)
    res = runner.run("run", "-e", "ns", "-j", "4", "--format", "json", *kinds, timeout=600)
    # Usage (a bad or missing file) is more severe than a job that failed.
    assert res.code == Category.USAGE, res.stderr
    events = res.events()
    results = {e["file"]: e["record"] for e in events if e["event"] == "result"}
    errors = {e["file"]: e for e in events if e["event"] == "error"}
    assert set(results) | set(errors) == set(kinds)
    assert not set(results) & set(errors)
    for file, kind in kinds.items():
        if kind == "ok":
            assert results[file]["exitCode"] == 0
        elif kind == "fail":
            index = int(Path(file).stem[1:])
            assert results[file]["exitCode"] == 3 + index % 5
        else:
            assert errors[file]["exitCode"] == Category.USAGE
            assert file in errors[file]["message"]
    outputs = {(e["file"], e["line"]) for e in events if e["event"] == "output"}
    assert (str(runner.dir / "f000.json"), "0\n") in outputs
    assert runner.work_dirs() == []
    # Each success was memoized on its own: the batch again answers from the store.
    again = runner.run("run", "-e", "ns", "--format", "json", *(f for f, k in kinds.items() if k == "ok"))
    assert again.code == 0, again.stderr
    assert not [e for e in again.events() if e["event"] == "output"]


def test_text_output_names_each_file_and_exit_is_job_failed(runner: Runner) -> None:
    ok = runner.formula("/bin/true", name="ok.json")
    bad = runner.formula("/bin/sh", "-c", "exit 7", name="bad.json")
    res = runner.run("run", "-e", "ns", str(ok), str(bad))
    assert res.code == Category.JOB_FAILED, res.stderr
    # Each record after a line with its file name, in the order they finished.
    seen: dict[str, dict[str, object]] = {}
    decoder = json.JSONDecoder()
    rest = res.stdout
    while rest.strip():
        name, _, rest = rest.partition("\n")
        record, end = decoder.raw_decode(rest)
        seen[name] = record
        rest = rest[end:].lstrip("\n")
    assert seen[str(ok)]["exitCode"] == 0 and seen[str(bad)]["exitCode"] == 7
    assert f"{bad}: the job exited 7" in res.stderr
    assert runner.run("run", "-e", "ns", "--ignore-job-exit", str(ok), str(bad)).code == 0


def test_paths_from_stdin(runner: Runner) -> None:
    files = [runner.formula("/bin/sh", "-c", f"echo {i}", name=f"s{i}.json") for i in range(5)]
    proc = subprocess.run(
        runner.command("run", "-e", "ns", "--format", "json", "-"),
        input="".join(f"{f}\n" for f in files) + "\n",
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    done = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(e["file"] for e in done if e["event"] == "result") == sorted(map(str, files))


class _Events:
    """JSON events read from a process's stdout pipe as they come (no read-ahead buffer)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.pending = b""

    def next_result(self, timeout: float = 90.0) -> dict[str, object]:
        """The next result or error event (output and progress skipped); fails after ``timeout``."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                event: dict[str, object] = json.loads(line)
                if event["event"] in ("result", "error"):
                    return event
            ready, _, _ = select.select([self.fd], [], [], max(0, deadline - time.monotonic()))
            assert ready, f"no result printed in {timeout} s"
            chunk = os.read(self.fd, 65536)
            assert chunk, "end of output"
            self.pending += chunk


def test_paths_from_stdin_start_as_they_arrive(runner: Runner) -> None:
    """Each path starts its formula when its line arrives, not when stdin ends.

    The pipe stays open: the first record must come while the second path is
    not even written yet, then the second's after it is.
    """
    first, second = (
        runner.formula("/bin/sh", "-c", f"echo {i}", name=f"a{i}.json") for i in range(2)
    )
    with subprocess.Popen(
        runner.command("run", "-e", "ns", "--format", "json", "-"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{first}\n".encode())
            proc.stdin.flush()
            events = _Events(proc)
            event = events.next_result()
            assert event["event"] == "result" and event["file"] == str(first), event
            proc.stdin.write(f"  {second}\n\n".encode())
            proc.stdin.close()
            event = events.next_result()
            assert event["event"] == "result" and event["file"] == str(second), event
            assert proc.wait(timeout=120) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_sigint_while_waiting_for_paths_on_stdin(runner: Runner) -> None:
    """Waiting for the next path is cancellable: Ctrl-C ends the batch (exit 8) at once."""
    first = runner.formula("/bin/true", name="w.json")
    with subprocess.Popen(
        runner.command("run", "-e", "ns", "--format", "json", "-"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{first}\n".encode())
            proc.stdin.flush()
            assert _Events(proc).next_result()["event"] == "result"  # now it waits for more
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == Category.CANCELLED
        finally:
            if proc.poll() is None:
                proc.kill()
    assert runner.work_dirs() == []


def test_fail_fast_stops_reading_stdin(runner: Runner) -> None:
    """--fail-fast: the first failure ends the batch, even with stdin still open."""
    failing = runner.formula("/bin/sh", "-c", "exit 9", name="ff.json")
    with subprocess.Popen(
        runner.command("run", "-e", "ns", "--fail-fast", "-"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{failing}\n".encode())
            proc.stdin.flush()
            assert proc.wait(timeout=90) == Category.JOB_FAILED  # stdin never closed
        finally:
            if proc.poll() is None:
                proc.kill()
    assert runner.work_dirs() == []


@pytest.mark.anyio
async def test_paths_from_a_regular_file_and_a_pipe(tmp_path: Path) -> None:
    from repeatr.runner.batch import paths_from

    listing = tmp_path / "list"
    listing.write_bytes(b"a.json\n\n  b c.json \nlast")
    with listing.open("rb") as f:
        assert [p async for p in paths_from(f.fileno())] == ["a.json", "b c.json", "last"]
    r, w = os.pipe()
    try:
        os.write(w, b"x\ny")
        os.close(w)
        assert [p async for p in paths_from(r)] == ["x", "y"]
    finally:
        os.close(r)


def test_fail_fast_cancels_the_rest(runner: Runner) -> None:
    marker = "sleep 4545"
    failing = runner.formula("/bin/sh", "-c", "sleep 1; exit 9", name="x.json")
    slow = [
        runner.formula("/bin/sh", "-c", f"{marker}; echo {i}", name=f"w{i}.json")
        for i in range(3)
    ]
    t0 = time.monotonic()
    res = runner.run("run", "-e", "ns", "-j", "2", "--fail-fast", *map(str, [failing, *slow]))
    assert time.monotonic() - t0 < 60
    assert res.code == Category.JOB_FAILED, res.stderr
    for file in slow:
        assert f"{file}: skipped (--fail-fast)" in res.stderr
    assert not processes_with(marker)
    assert runner.work_dirs() == []


def test_default_goes_on_after_a_failure(runner: Runner) -> None:
    failing = runner.formula("/bin/sh", "-c", "exit 4", name="x.json")
    later = runner.formula("/bin/sh", "-c", "sleep 0.5; echo later", name="later.json")
    res = runner.run("run", "-e", "ns", "-j", "1", "--format", "json", str(failing), str(later))
    assert res.code == Category.JOB_FAILED
    records = {e["file"]: e["record"] for e in res.events() if e["event"] == "result"}
    assert records[str(later)]["exitCode"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_batch_tears_everything_down(runner: Runner, sig: signal.Signals) -> None:
    marker = f"sleep 46{sig.value:02d}"
    files = [
        runner.formula("/bin/sh", "-c", f"trap '' TERM INT HUP; {marker}; echo {i}", name=f"g{i}.json")
        for i in range(6)
    ]
    with runner.start("run", "-e", "ns", "-j", "3", *map(str, files)) as proc:
        wait_for(lambda: _sleeping(marker) == 3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == Category.CANCELLED, err
    assert not processes_with(marker)
    assert runner.work_dirs() == []
    assert _mounts_of(runner) == []


def test_sigkill_mid_batch_is_cleaned_by_the_next_invocation(runner: Runner) -> None:
    marker = "sleep 4747"
    files = [runner.formula("/bin/sh", "-c", f"{marker}; echo {i}", name=f"k{i}.json") for i in range(4)]
    with runner.start("run", "-e", "ns", "-j", "4", *map(str, files)) as proc:
        wait_for(lambda: _sleeping(marker) == 4)
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: not processes_with(marker), timeout=10)
    assert _mounts_of(runner) == []
    res = runner.run("run", "-e", "ns", str(runner.formula("/bin/true", name="t.json")))
    assert res.code == 0, res.stderr
    assert runner.work_dirs() == []


def test_most_severe() -> None:
    assert most_severe([]) == 0
    assert most_severe([0, 0]) == 0
    assert most_severe([0, Category.JOB_FAILED, 0]) == Category.JOB_FAILED
    assert most_severe([Category.JOB_FAILED, Category.USAGE]) == Category.USAGE
    assert most_severe([Category.USAGE, Category.EXECUTOR, 21]) == Category.EXECUTOR
    assert most_severe([Category.EXECUTOR, Category.CANCELLED]) == Category.CANCELLED
    assert most_severe([0, 21]) == 21


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_library_batch_unpacks_a_shared_input_once(runner: Runner) -> None:
    """Eight formulas, one rootfs: one unpack, one hold of its shelf, on either backend."""
    files = [str(runner.formula("/bin/sh", "-c", f"echo {i}", name=f"u{i}.json")) for i in range(8)]
    files.append(str(runner.dir / "absent.json"))
    options = RunOptions(state=runner.state, executor="ns")
    records: list[bytes] = []
    done: list[BatchItem] = []
    async with SharedCache(runner.state) as shared:
        items = await run_batch(
            files, options, BatchOptions(jobs=4),
            events_for=lambda _f: RunnerEvents(record=records.append),
            on_done=done.append, cache=shared,
        )
        assert shared.holds == 1
    assert [item.formula_file for item in items] == files
    assert len(done) == len(files) and len(records) == 8
    outcomes = [item.result.outcome for item in items[:8] if item.result is not None]
    assert len(outcomes) == 8 and all(o is not None for o in outcomes)
    assert sum(o.fetched["/"] for o in outcomes if o is not None) == 1
    assert items[8].error is not None and items[8].error.category is Category.USAGE
    assert runner.work_dirs() == []


@pytest.mark.anyio
async def test_library_batch_cancelled_tears_down(runner: Runner) -> None:
    marker = "sleep 4848"
    files = [str(runner.formula("/bin/sh", "-c", f"{marker}; echo {i}", name=f"c{i}.json")) for i in range(4)]
    options = RunOptions(state=runner.state, executor="ns")
    with anyio.move_on_after(60):
        async with anyio.create_task_group() as tg:

            async def cancel_when_running() -> None:
                while _sleeping(marker) < 2:  # noqa: ASYNC110 (polling /proc)
                    await anyio.sleep(0.02)
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_running)
            await run_batch(files, options, BatchOptions(jobs=2))
    assert not processes_with(marker)
    assert runner.work_dirs() == []


@pytest.mark.anyio
async def test_library_run_then_memo_hit(runner: Runner) -> None:
    """``runner.run``: a run, then the same file answered by the key the CLI's fast path uses."""
    from repeatr.memo import MemoStore
    from repeatr.runner.run import run

    f = str(runner.formula("/bin/sh", "-c", "echo library"))
    options = RunOptions(state=runner.state, executor="ns")
    lines: list[bytes] = []
    first = await run(f, options, RunnerEvents(output=lambda _s, line: lines.append(line)))
    assert not first.memo_hit and first.exit_code == 0 and lines == [b"library\n"]
    _key, stored = MemoStore(runner.state).get_by_file(f, "ns")
    assert stored == first.record_json
    second = await run(f, options)
    assert second.memo_hit and second.record_json == first.record_json


def test_library_run_sync(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    from repeatr.runner.run import run_sync

    f = str(runner.formula("/bin/sh", "-c", "exit 5"))
    for backend in ("asyncio", "trio"):
        monkeypatch.setenv("REPEATR_ASYNC_BACKEND", backend)
        result = run_sync(f, RunOptions(state=runner.state, executor="ns"))
        assert result.exit_code == 5 and result.record["exitCode"] == 5


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.8, 1.5])
def test_sigterm_at_any_moment_leaves_the_host_as_found(
    busybox: Busybox, tmp_path: Path, delay: float
) -> None:
    """A fresh cache each time, so the signal may land in start-up, an unpack, a job or teardown."""
    from repeatr.cache import Cache

    fresh = Runner(busybox, tmp_path)
    marker = "sleep 0.3"
    files = [
        str(fresh.formula("/bin/sh", "-c", f"echo {i}; {marker}", name=f"m{i}.json"))
        for i in range(8)
    ]
    with fresh.start("run", "-e", "ns", "-j", "4", *files) as proc:
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        # Finished first (0), cancelled (8), or killed before its handlers were up.
        assert proc.returncode in (0, Category.CANCELLED, -signal.SIGTERM), err
    following = fresh.run("run", "-e", "ns", str(fresh.formula("/bin/true", name="next.json")))
    assert following.code == 0, following.stderr
    assert fresh.work_dirs() == []
    assert Cache(fresh.state).layout.list_temps() == []
    assert not processes_with(marker)
    assert _mounts_of(fresh) == []


def _dead_run_dir(state: Path) -> Path:
    """A work dir as a run killed by SIGKILL leaves it: named by an owner that is gone."""
    from repeatr import workdir
    from repeatr.owner import Owner

    proc = subprocess.Popen(["sleep", "60"])
    owner = Owner.of_pid(proc.pid)
    proc.kill()
    proc.wait()
    assert owner is not None
    path = workdir.runs_dir(state) / f"deadbeef.{owner}"
    path.mkdir(parents=True)
    return path


@pytest.mark.anyio
async def test_library_batch_reclaims_dead_runs_once_before_its_formulas(runner: Runner) -> None:
    """The batch reclaims what dead runs left once, for all its formulas; each run then skips it.

    (Each formula used to do it again: a thread hop and ~1 ms of CPU per formula.)
    """
    dead = _dead_run_dir(runner.state)
    files = [str(runner.formula("/bin/true", str(i), name=f"d{i}.json")) for i in range(3)]
    batch_log: list[str] = []
    formula_log: list[str] = []
    items = await run_batch(
        files, RunOptions(state=runner.state, executor="ns", use_memo=False), BatchOptions(jobs=2),
        events_for=lambda _f: RunnerEvents(log=formula_log.append), log=batch_log.append,
    )
    assert all(item.result is not None and item.result.exit_code == 0 for item in items)
    assert not dead.exists()
    assert [m for m in batch_log if "dead run" in m] == [f"removed the work dir of a dead run: {dead}"]
    assert not [m for m in formula_log if "dead run" in m]


@pytest.mark.anyio
async def test_run_without_collect_dead_leaves_dead_runs_alone(runner: Runner) -> None:
    from repeatr.runner.run import run

    dead = _dead_run_dir(runner.state)
    f = str(runner.formula("/bin/true"))
    options = RunOptions(state=runner.state, executor="ns", use_memo=False)
    from msgspec.structs import replace

    assert (await run(f, replace(options, collect_dead=False))).exit_code == 0
    assert dead.exists()
    assert (await run(f, options)).exit_code == 0
    assert not dead.exists()


@pytest.mark.anyio
async def test_library_batch_chooses_the_executor_once_per_kind_of_job(runner: Runner) -> None:
    """auto's choice (preflights, capabilities) is made once per needs, not per formula."""
    same = [str(runner.formula("/bin/true", str(i), name=f"e{i}.json")) for i in range(3)]
    named = str(runner.formula("/bin/true", hostname="box", name="h.json"))
    debug: dict[str, list[str]] = {}

    def events_for(file: str) -> RunnerEvents:
        return RunnerEvents(debug=debug.setdefault(file, []).append)

    items = await run_batch(
        [*same, named], RunOptions(state=runner.state, use_memo=False), BatchOptions(jobs=1),
        events_for=events_for,
    )
    assert all(item.result is not None and item.result.exit_code == 0 for item in items)
    remembered = [f for f in same if any("chosen for an earlier" in m for m in debug[f])]
    assert len(remembered) == 2  # jobs=1: the first chose, the next two reused its choice
    assert not any("chosen for an earlier" in m for m in debug[named])  # other needs
    assert any(m == "executor: ns (auto)" for m in debug[named])


def test_batch_debug_lines_name_their_formula(runner: Runner) -> None:
    """With --debug, each formula's executor lines carry its own file name.

    Without --debug a batch shares one executor per kind of job; with it, each
    run gets its own (its debug lines go to that run's events)."""
    files = [runner.formula("/bin/true", f"marker-{i}", name=f"d{i}.json") for i in range(3)]
    res = runner.run("run", *map(str, files), "--executor", "ns", "--debug")
    assert res.code == 0, res.stderr
    spec_lines = [line for line in res.stderr.splitlines() if "sandbox spec: " in line]
    assert len(spec_lines) == len(files), res.stderr
    for i, f in enumerate(files):
        mine = [line for line in spec_lines if f"{f}: sandbox spec: " in line]
        assert len(mine) == 1, res.stderr
        # Its own job's spec, not another formula's.
        assert [m for m in range(3) if f'"marker-{m}"' in mine[0]] == [i]


def test_batch_shares_an_executor_per_kind_and_asks_its_capabilities_once() -> None:
    """ExecutorChooser: one executor per name without debug; its capabilities asked once."""
    from repeatr.runner.run import ExecutorChooser

    chooser = ExecutorChooser()
    quiet = RunnerEvents()
    first = chooser.executor("ns", quiet)
    assert chooser.executor("ns", quiet) is first
    assert chooser.executor("ns", RunnerEvents(log=print)) is first
    assert chooser.executor("chroot", quiet) is not first
    debugging = RunnerEvents(debug=lambda _m: None)
    assert chooser.executor("ns", debugging) is not first
    assert first.known_capabilities() is first.known_capabilities()
    assert first.known_capabilities() == first.capabilities()


#: A job that logs its start and end in /shared/log and, in between, waits (up to
#: 5 s) for a partner to be running too, unless every job has started already:
#: so the bound is reached whatever the host's load, and its being passed shows.
_OVERLAP_JOB = """
echo s >> /shared/log
i=0
while [ "$(grep -c s /shared/log)" -lt {n} ] \\
    && [ $(( $(grep -c s /shared/log) - $(grep -c e /shared/log) )) -lt 2 ] \\
    && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.2
echo e >> /shared/log
"""


def _most_at_once(log: str) -> int:
    running = most = 0
    for line in log.split():
        running += 1 if line == "s" else -1
        most = max(most, running)
    return most


def test_jobs_bound_the_jobs_not_the_formulas(runner: Runner, tmp_path: Path) -> None:
    """``-j 2``: at most 2 jobs at once, however many formulas are under way around them
    (read, prepared, torn down: ``in_flight``), and the bound is reached."""
    from repeatr.runner.batch import in_flight

    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "log").touch()
    (shared / "log").chmod(0o666)  # the job's user is not root
    n = 8
    files = [
        runner.formula(
            "/bin/sh", "-c", _OVERLAP_JOB.format(n=n), f"job {i}",
            inputs={"/shared": f"mount:rw:{shared}"}, name=f"o{i}.json",
        )
        for i in range(n)
    ]
    res = runner.run("run", "-e", "ns", "-j", "2", *map(str, files), timeout=300)
    assert res.code == 0, res.stderr
    log = (shared / "log").read_text()
    assert log.split().count("s") == n and log.split().count("e") == n
    assert _most_at_once(log) == 2, log
    assert in_flight(2) > 2 and in_flight(1) == 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_one_job_at_a_time_runs_the_order_given(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """``-j 1``: one formula at a time, in the order given, on either backend (trio
    starts new tasks in a random order: the places are taken in the order given)."""
    monkeypatch.setenv("REPEATR_ASYNC_BACKEND", backend)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "log").touch()
    (shared / "log").chmod(0o666)  # the job's user is not root
    files = [
        runner.formula(
            "/bin/sh", "-c", f"echo {i} >> /shared/log", inputs={"/shared": f"mount:rw:{shared}"},
            name=f"n{i}.json",
        )
        for i in range(6)
    ]
    res = runner.run("run", "-e", "ns", "-j", "1", *map(str, files), timeout=300)
    assert res.code == 0, res.stderr
    assert (shared / "log").read_text().split() == [str(i) for i in range(6)]


@pytest.mark.anyio
async def test_preparer_reads_a_chunk_a_hop(runner: Runner) -> None:
    """One thread hop prepares a chunk of formulas; a bad file's error is its own."""
    from repeatr.runner.batch import Preparer

    files = [str(runner.formula("/bin/true", str(i), name=f"p{i}.json")) for i in range(4)]
    files.insert(1, str(runner.dir / "absent.json"))
    options = RunOptions(state=runner.state, executor="ns")
    preparer = Preparer(files, options, lambda _file: RunnerEvents(), chunk=3)
    _ev, first = await preparer.get(0)
    assert first.loaded is not None and first.hit is None
    assert sorted(preparer._ready) == [1, 2]  # read in the same hop as the first
    with pytest.raises(Exception) as raised:
        await preparer.get(1)
    assert getattr(raised.value, "category", None) is Category.USAGE
    await preparer.get(2)
    assert preparer._ready == {}
    _ev, last = await preparer.get(4)  # a hop of its own, for what is left
    assert last.loaded is not None and preparer._ready == {}  # 3 was left, 4 asked: not 3


def test_a_formula_slow_to_prepare_does_not_hold_every_place(
    runner: Runner, tmp_path: Path
) -> None:
    """``-j 2``, the first formula's input trickling in (a slow fetch): the next two
    run meanwhile, one at a time (a place is kept for the first), not after it."""
    from repeatr.fileset.pack import pack_dir
    from repeatr.model.filters import Filters
    from tests.warehouse.trickle import trickling

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("never arrives\n")
    ware = pack_dir(tree, None, filters=Filters())
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "log").touch()
    (shared / "log").chmod(0o666)  # the job's user is not root
    with trickling(0.3) as server:
        slow = runner.formula("/bin/true", inputs={"/data": str(ware)}, name="slow.json")
        text = slow.read_text().replace(
            f'"/data": ["{runner.busybox.warehouse}"]', f'"/data": ["ca+{server.url}/"]'
        )
        assert server.url in text
        slow.write_text(text)
        fast = [
            runner.formula(
                "/bin/sh", "-c", f"echo {i} >> /shared/log",
                inputs={"/shared": f"mount:rw:{shared}"}, name=f"fast{i}.json",
            )
            for i in range(2)
        ]
        proc = subprocess.Popen(
            runner.command("run", "-e", "ns", "-j", "2", str(slow), *map(str, fast)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "REPEATR_FETCH_MIN_RATE": "100", "REPEATR_FETCH_RATE_WINDOW": "20"},
        )
        try:
            wait_for(lambda: len((shared / "log").read_text().split()) == 2, timeout=15)
            assert proc.poll() is None and not server.wait_closed(0), "the slow fetch ended first"
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=60)
    assert (shared / "log").read_text().split() == ["0", "1"], err
    wait_for(lambda: runner.work_dirs() == [])
