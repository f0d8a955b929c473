"""A single ``repeatr run`` driven without an event loop (``repeatr.runner.single``).

The lean path and the full one (``REPEATR_SINGLE=0``, on both anyio backends)
must give the same records, job output, messages, exit codes and memo
entries; the lean one must never import asyncio or anyio; every case it does
not cover must go to the full path; a signal at any moment must leave the
host as found. Which path ran is read from ``REPEATR_SINGLE_TRACE``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category
from repeatr.runner.single import HEAVY, Args, parse, plan
from tests.clirun import Result
from tests.rootfs import mountinfo, processes_with

from .conftest import Runner, wait_for

pytestmark = pytest.mark.root

BACKENDS = ["asyncio", "trio"]


def _run(runner: Runner, trace: Path, *args: str, lean: bool, backend: str = "asyncio",
         stdin: str | None = None) -> Result:
    env = dict(os.environ, REPEATR_SINGLE_TRACE=os.fspath(trace), REPEATR_ASYNC_BACKEND=backend)
    if not lean:
        env["REPEATR_SINGLE"] = "0"
    proc = subprocess.run(
        runner.command(*args), capture_output=True, text=True, timeout=runner.timeout,
        check=False, env=env, input=stdin,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _last_trace(trace: Path) -> str:
    return trace.read_text().splitlines()[-1] if trace.exists() else ""


def _normal(stdout: str) -> str:
    """A record (or json events) without what differs from run to run: guid and time."""
    def scrub(doc: Any) -> Any:
        if isinstance(doc, dict):
            return {k: scrub(v) for k, v in doc.items() if k not in ("guid", "time")}
        if isinstance(doc, list):
            return [scrub(v) for v in doc]
        return doc

    try:
        return json.dumps(scrub(json.loads(stdout)))
    except json.JSONDecodeError:
        pass
    try:
        return "\n".join(
            json.dumps(scrub(json.loads(line))) for line in stdout.splitlines() if line.strip()
        )
    except json.JSONDecodeError:  # a batch's: file names, then records
        return "\n".join(
            line for line in stdout.splitlines() if '"guid"' not in line and '"time"' not in line
        )


def _same_stderr(lean: str, full: str, name: str) -> None:
    """The same lines; each stream's (the job's stdout, its stderr, ours) in the same order.

    Between streams the full path's order is not defined (a pump per pipe,
    outputs packed in parallel), so only the order within each is compared.
    """
    a, b = lean.splitlines(), full.splitlines()
    assert sorted(a) == sorted(b), name
    for prefix in ("out| ", "err| ", '{"event": "output", "stream": "stdout"',
                   '{"event": "output", "stream": "stderr"'):
        assert [x for x in a if x.startswith(prefix)] == [x for x in b if x.startswith(prefix)]


def _ours(mounts: list[str], runner: Runner, tmp: Path) -> list[str]:
    """The host's mounts of this test's files (other sessions mount and unmount meanwhile)."""
    return [m for m in mounts if os.fspath(runner.state) in m or os.fspath(tmp) in m]


def _memo_listing(state: Path) -> list[str]:
    memo = state / "memo"
    return sorted(
        os.path.relpath(os.path.join(d, f), memo) for d, _, fs in os.walk(memo) for f in fs
    )


def _warm(runner: Runner) -> None:
    """The rootfs shelf in the cache, as any run after the first finds it."""
    res = runner.run("run", str(runner.formula("/bin/true", name="warm.json")), "--no-memo")
    assert res.code == 0, res.stderr


#: The exit status each case must give (on both paths).
EXPECTED = {"failing-job": 20, "job-invalid": 40}


def _cases(runner: Runner, tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    ca = f"ca+file://{tmp / 'wh-ca'}/"
    plain = f"file://{tmp / 'wh-file' / 'out.tar'}"
    (tmp / "wh-file").mkdir()
    (tmp / "wh-ca").mkdir()
    host = tmp / "hostdir"
    host.mkdir()
    (host / "greeting").write_text("from the host\n")
    f = runner.formula
    return {
        "streams-env-cwd": (f(
            "/bin/sh", "-c", 'echo "out $FOO"; pwd; echo err >&2; printf "no newline"',
            env={"FOO": "bar"}, cwd="/tmp", name="a.json",
        ), []),
        "outputs-saved": (f(
            "/bin/sh", "-c", "mkdir -p /task/out /task/o2; echo x > /task/out/f; echo y > /task/o2/g",
            outputs={"/task/out": {"packtype": "tar"}, "/task/o2": {"packtype": "tar"},
                     "/task/none": {"packtype": "tar"}},
            save={"/task/out": ca, "/task/o2": plain}, name="b.json",
        ), []),
        "output-not-saved": (f(
            "/bin/sh", "-c", "mkdir -p /task/out; echo x > /task/out/f",
            outputs={"/task/out": {"packtype": "tar"}}, name="c.json",
        ), []),
        "failing-job": (f("/bin/sh", "-c", "echo before; exit 3", name="d.json"), []),
        "failing-ignored": (f("/bin/sh", "-c", "exit 4", name="e.json"), ["--ignore-job-exit"]),
        "json-format": (f("/bin/sh", "-c", "echo hi", name="g.json"), ["--format", "json"]),
        "quiet": (f("/bin/sh", "-c", "echo hi", name="h.json"), ["-q"]),
        "chroot": (f("/bin/sh", "-c", "echo hi", name="i.json"), ["-e", "chroot"]),
        "job-invalid": (f("/no/such/exec", name="j.json"), []),
        "host-mount": (f(
            "/bin/cat", "/mnt/h/greeting", inputs={"/mnt/h": f"mount:ro:{host}"}, name="k.json",
        ), []),
        "output-dir": (f(
            "/bin/sh", "-c", "mkdir -p /task/out; echo z > /task/out/f",
            outputs={"/task/out": {"packtype": "tar"}}, save={"/task/out": ca}, name="l.json",
        ), ["--output-dir", str(tmp / "made")]),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_lean_and_full_runs_agree(runner: Runner, tmp_path: Path, backend: str) -> None:
    _warm(runner)
    trace = tmp_path / "trace"
    for name, (formula, extra) in _cases(runner, tmp_path).items():
        runs = {}
        memos = {}
        for lean in (True, False):
            memo = runner.state / "memo"
            if memo.exists():
                subprocess.run(["rm", "-rf", os.fspath(memo)], check=True)
            runs[lean] = _run(runner, trace, "run", str(formula), *extra, lean=lean,
                              backend=backend)
            if lean:
                assert _last_trace(trace).startswith("lean"), (name, _last_trace(trace))
            memos[lean] = _memo_listing(runner.state)
            assert runner.work_dirs() == [], name
        a, b = runs[True], runs[False]
        assert a.code == EXPECTED.get(name, 0), (name, a.stderr)
        assert a.code == b.code, name
        # json: the job's output events and the result may come in either order
        # on the full path (its pumps run beside the run); each stream's in order.
        _same_stderr(_normal(a.stdout), _normal(b.stdout), name)
        _same_stderr(a.stderr, b.stderr, name)
        assert memos[True] == memos[False], name
    assert (tmp_path / "made" / "record.json").exists()


def test_lean_run_imports_no_event_loop(runner: Runner, tmp_path: Path) -> None:
    _warm(runner)
    trace = tmp_path / "trace"
    f = runner.formula("/bin/sh", "-c", "echo hi")
    res = _run(runner, trace, "run", str(f), lean=True)
    assert res.code == 0, res.stderr
    assert _last_trace(trace) == f"lean: imported none of {', '.join(HEAVY)}"
    # A hit by formula ID (another file, same formula) is answered there too.
    g = runner.formula("/bin/sh", "-c", "echo hi", name="other.json")
    (tmp_path / "other.json").write_text(json.dumps(json.loads(f.read_text())) + "\n")
    res2 = _run(runner, trace, "run", str(g), "--format", "json", lean=True)
    assert res2.code == 0 and res2.events()[-1]["record"]["guid"] == res.record()["guid"]
    assert _last_trace(trace) == "lean: imported json"  # --format json's events, only


def test_lean_run_beside_a_leased_address_imports_no_event_loop(
    runner: Runner, tmp_path: Path
) -> None:
    """With a lease in an IP index (a bridged run of another invocation), the lean run's gc
    reads that index (``repeatr.net.gc``) and must still import none of ``HEAVY``."""
    import shutil

    from repeatr.net.config import DEFAULT_HOST
    from repeatr.net.ipindex import IPIndex

    _warm(runner)
    trace = tmp_path / "trace"
    network = f"heavytest{os.getpid()}"
    index = IPIndex(DEFAULT_HOST.state_dir, network, "10.252.0.0/24")
    try:
        index.allocate("heavytest-run")  # held by this (live) process: gc keeps it
        res = _run(runner, trace, "run", str(runner.formula("/bin/true")), "--no-memo",
                   lean=True)
        assert res.code == 0, res.stderr
        assert _last_trace(trace) == f"lean: imported none of {', '.join(HEAVY)}"
        assert index.lookup("heavytest-run") is not None
    finally:
        shutil.rmtree(DEFAULT_HOST.state_dir / network, ignore_errors=True)


@pytest.mark.parametrize(
    ("why", "args", "formula"),
    [
        ("option --debug", ["--debug"], {}),
        ("not one formula", ["BATCH"], {}),
        ("not a regular file", ["PIPE"], {}),
        ("an input not in the cache", ["MISSING"], {}),
    ],
)
def test_what_the_lean_path_does_not_cover_falls_back(
    runner: Runner, tmp_path: Path, why: str, args: list[str], formula: dict[str, Any]
) -> None:
    _warm(runner)
    trace = tmp_path / "trace"
    if args == ["MISSING"]:  # a ware no warehouse has: not found, on either path
        ware = runner.busybox.ware
        formula = {"inputs": {"/mnt/x": ware[:-1] + ("A" if ware[-1] != "A" else "B")}}
        args = []
    f = runner.formula("/bin/true", name="f.json", **formula)
    stdin = None
    argv = [str(f)]
    if args == ["BATCH"]:
        argv = [str(f), str(runner.formula("/bin/true", name="g.json"))]
    elif args == ["PIPE"]:
        argv, stdin = ["/dev/stdin"], f.read_text()
    else:
        argv += args
    lean = _run(runner, trace, "run", "--no-memo", *argv, lean=True, stdin=stdin)
    assert _last_trace(trace) == f"full: {why}"
    full = _run(runner, trace, "run", "--no-memo", *argv, lean=False, stdin=stdin)
    assert lean.code == full.code
    # A batch prints each record as its formula finishes: in either order.
    assert sorted(_normal(lean.stdout).splitlines()) == sorted(_normal(full.stdout).splitlines())


def test_plan_leaves_bridges_remote_saves_and_other_executors(
    runner: Runner, tmp_path: Path
) -> None:
    _warm(runner)
    state = os.fspath(runner.state)
    bridged = runner.formula("/bin/true", network="bridge", name="b.json")
    assert plan(Args(str(bridged), cache=state)) == "a bridge network"
    remote = runner.formula(
        "/bin/true", outputs={"/o": {"packtype": "tar"}}, save={"/o": "ca+https://127.0.0.1:9/"},
        name="r.json",
    )
    assert plan(Args(str(remote), cache=state)) == "an output saved to a remote warehouse"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert plan(Args(str(broken), cache=state)) == "the formula does not load"
    assert parse(["run", "f.json", "-e", "runc"]) == "executor runc"
    assert parse(["run", "f.json", "--dask", "tcp://x:1"]) == "option --dask"
    assert parse(["run", "-j", "2", "f.json"]) == "option -j"
    assert parse(["run", "f.json", "--format", "yaml"]) == "--format yaml"
    assert parse(["check", "f.json"]) == "not a run"
    assert parse(["run", "f.json", "-q", "-e", "ns"]) == Args("f.json", quiet=True, executor="ns")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "f.json"],
        ["run", "-q", "--no-memo", "-e", "chroot", "f.json"],
        ["run", "f.json", "--cache", "/srv/c", "--executor", "ns", "--ignore-job-exit"],
        ["run", "f.json", "--ware-disk-limit", "20G", "--output-dir", "out", "--format", "json"],
    ],
)
@pytest.mark.parametrize("env", [{}, {
    "REPEATR_CACHE": "/srv/env-cache", "REPEATR_WARE_DISK_LIMIT": "10%",
    "REPEATR_BRIDGE": "envbr0", "REPEATR_SUBNET": "10.88.0.0/16",
}])
def test_lean_options_are_the_full_paths(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same argv gives the same ``RunOptions`` parsed by either path."""
    from repeatr.cli.main import build_parser
    from repeatr.cli.options import run_options

    for name in ("REPEATR_CACHE", "REPEATR_WARE_DISK_LIMIT", "REPEATR_BRIDGE", "REPEATR_SUBNET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lean = parse(argv)
    assert isinstance(lean, Args), lean
    full = run_options(build_parser(argv).parse_args(argv))
    assert lean.options() == full


def test_signals_at_random_moments_leave_the_host_as_found(
    runner: Runner, tmp_path: Path
) -> None:
    _warm(runner)
    trace = tmp_path / "trace"
    before = _ours(mountinfo(), runner, tmp_path)
    rng = random.Random(1414)
    ca = f"ca+file://{tmp_path / 'wh'}/"
    (tmp_path / "wh").mkdir()
    for i in range(8):
        marker = f"sleep 0.{i}4{i}"
        f = runner.formula(
            "/bin/sh", "-c", f"mkdir -p /task/out; echo {i} > /task/out/f; {marker}",
            outputs={"/task/out": {"packtype": "tar"}}, save={"/task/out": ca}, name=f"s{i}.json",
        )
        sig = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
        env = dict(os.environ, REPEATR_SINGLE_TRACE=os.fspath(trace))
        proc = subprocess.Popen(
            runner.command("run", "--no-memo", str(f)), env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            time.sleep(rng.uniform(0.05, 0.5))
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode in (0, Category.CANCELLED), err
        if proc.returncode == Category.CANCELLED:
            assert f"cancelled by {sig.name}" in err, err
        wait_for(lambda m=marker: not processes_with(m), timeout=10)
        assert not processes_with(str(f))  # neither the CLI nor its sandbox server
        assert runner.work_dirs() == []
        assert _ours(mountinfo(), runner, tmp_path) == before
    assert any(line.startswith("lean") for line in trace.read_text().splitlines())


def test_sigkill_of_a_lean_run_leaves_what_the_next_one_cleans(
    runner: Runner, tmp_path: Path
) -> None:
    _warm(runner)
    trace = tmp_path / "trace"
    before = _ours(mountinfo(), runner, tmp_path)
    marker = "sleep 4141"
    f = runner.formula("/bin/sh", "-c", marker, name="k.json")
    env = dict(os.environ, REPEATR_SINGLE_TRACE=os.fspath(trace))
    proc = subprocess.Popen(
        runner.command("run", str(f)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: bool(processes_with(marker)))
        assert len(runner.work_dirs()) == 1
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    wait_for(lambda: not processes_with(marker), timeout=10)  # the job died with its run
    wait_for(lambda: not processes_with(str(f)), timeout=10)  # and the sandbox server
    assert _ours(mountinfo(), runner, tmp_path) == before
    res = _run(runner, trace, "run", "--no-memo", str(runner.formula("/bin/true")), lean=True)
    assert res.code == 0, res.stderr
    assert _last_trace(trace).startswith("lean")
    assert "removed the work dir of a dead run" in res.stderr
    assert runner.work_dirs() == []
