"""One sandbox server per invocation: started once, gone with the invocation."""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from repeatr.executors.forkserver import PROCESS_NAME
from repeatr.linux import cgroups
from tests.rootfs import REPO, mountinfo, processes_with

from .conftest import Runner, wait_for

pytestmark = pytest.mark.root

#: An environment variable that marks one invocation's processes (``_servers``).
MARK = "REPEATR_TEST_INVOCATION"


class CountingPython:
    """``repeatr`` whose ``sys.executable`` is a wrapper that logs each exec.

    repeatr itself is exec'd as the real interpreter with the wrapper's path
    as argv[0], which CPython takes for ``sys.executable``. The sandbox
    server is started as ``sys.executable``, so each line of ``log`` is one
    start of it (its helpers are forks: no exec).
    """

    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "execs"
        self.path = tmp / "python"
        self.path.write_text(
            f'#!/bin/sh\necho "$$" >> {self.log}\nexec {os.path.realpath(sys.executable)} "$@"\n'
        )
        self.path.chmod(0o755)

    def execs(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def run(self, runner: Runner, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [os.fspath(self.path), "-m", "repeatr", *args, "--cache", os.fspath(runner.state)],
            executable=os.path.realpath(sys.executable),  # argv[0] stays the wrapper
            env=self.env(), capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
        )

    def env(self) -> dict[str, str]:
        # The wrapper is outside the venv: its packages and repeatr by path.
        paths = [*site.getsitepackages(), os.fspath(REPO)]
        return {"PATH": os.defpath, "PYTHONPATH": os.pathsep.join(paths)}


def test_a_batch_forks_its_server(runner: Runner, tmp_path: Path) -> None:
    python = CountingPython(tmp_path)
    files = [str(runner.formula("/bin/sh", "-c", f"echo {i}", name=f"f{i}.json")) for i in range(8)]
    res = python.run(runner, "run", "-e", "ns", "-j", "4", *files)
    assert res.returncode == 0, res.stderr
    assert sum(f"out| {i}" in res.stderr for i in range(8)) == 8, res.stderr
    # repeatr itself is exec'd as the real interpreter (argv[0] the wrapper's
    # path): the wrapper never ran, the server is a fork of repeatr (one for
    # the batch: test_sigkill_mid_batch_leaves_nothing counts them).
    assert python.execs() == 0


def test_a_single_run_forks_its_server(runner: Runner, tmp_path: Path) -> None:
    python = CountingPython(tmp_path)
    f = runner.formula("/bin/true")
    res = python.run(runner, "run", "-e", "runc", str(f))
    assert res.returncode == 0, res.stderr
    assert python.execs() == 0
    # A memo hit by file never starts one: the fast path answers first.
    assert python.run(runner, "run", "-e", "runc", str(f)).returncode == 0
    assert python.execs() == 0


def _environ(pid: int) -> bytes:
    """``/proc/PID/environ``: the block the process was exec'd with (a fork's: its parent's)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        return f.read()


def _servers(parent: int, mark: str) -> list[int]:
    """Sandbox servers (and their forked helpers) of the repeatr process ``parent``.

    Forked ones (the CLI's) are named ``repeatr-sandbox`` and carry the
    environment block ``parent`` was exec'd with, so ``mark``, a variable
    set only in that invocation's environment, finds them even once
    ``parent`` is dead and they are reparented; spawned ones end their
    command line with ``parent``'s pid.
    """
    found = []
    for pid in processes_with(""):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                forked = comm.read().strip() == PROCESS_NAME
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            ours = forked and f"{MARK}={mark}".encode() in _environ(pid).split(b"\0")
            spawned = b"repeatr.executors.forkserver" in cmdline
            if ours or (spawned and cmdline.endswith(f"\0{parent}\0".encode())):
                found.append(pid)
        except OSError:
            pass
    return found


def _marked(runner: Runner, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``repeatr ARGS`` started with a mark of its own in its environment (see ``_servers``)."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        runner.command(*args), env={**os.environ, MARK: mark}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc, mark


def _sleeping(seconds: str) -> int:
    """How many ``sleep SECONDS`` processes run (not the shells that started them)."""
    count = 0
    for pid in processes_with(f"sleep {seconds}"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                count += f.read() == f"sleep\0{seconds}\0".encode()
        except OSError:
            pass
    return count


def test_sigkill_mid_batch_leaves_nothing(runner: Runner) -> None:
    """No server, helper or job outlives a SIGKILLed batch; its cgroups go too."""
    seconds = f"{uuid.uuid4().int % 9000 + 1000}"
    files = [
        str(runner.formula("/bin/sh", "-c", f"sleep {seconds}; echo {i}", name=f"s{i}.json",
                           limits={"memory": "64M"}))
        for i in range(4)
    ]
    proc, mark = _marked(runner, "run", "-e", "ns", "-j", "4", *files)
    try:
        wait_for(lambda: _sleeping(seconds) == 4, timeout=60)
        servers = _servers(proc.pid, mark)
        assert len(servers) == 5  # the server and its four helpers
        assert [c for c in cgroups.ours() if f"-{proc.pid}-" in os.path.basename(c)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(
            lambda: not processes_with(f"sleep {seconds}") and not _servers(proc.pid, mark)
        )
        assert _sleeping(seconds) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The helpers ran their cleanups: the run's cgroups are gone already.
    assert not [c for c in cgroups.ours() if f"-{proc.pid}-" in os.path.basename(c)]
    mine = (os.fspath(runner.state), os.fspath(runner.dir))
    assert not [line for line in mountinfo() if any(p in line for p in mine)]
    # The next invocation removes the dead batch's work dirs.
    ok = runner.run("run", "-e", "ns", str(runner.formula("/bin/true", name="next.json")))
    assert ok.code == 0, ok.stderr
    assert runner.work_dirs() == []


def test_sigkill_of_an_idle_invocation_ends_its_server(runner: Runner) -> None:
    """The server started before the imports dies with a repeatr killed at any moment."""
    f = runner.formula("/bin/sh", "-c", "sleep 1000")
    for delay in (0.0, 0.05, 0.2):
        proc, mark = _marked(runner, "run", "-e", "ns", str(f))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not _servers(proc.pid, mark), timeout=20)  # noqa: B023 (waited here)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def test_the_server_is_a_fork_of_the_invocation_and_dies_with_it(runner: Runner) -> None:
    """Forked by ``repeatr run`` itself (no interpreter of its own), gone when it is killed."""
    seconds = f"{uuid.uuid4().int % 9000 + 1000}"
    f = runner.formula("/bin/sh", "-c", f"sleep {seconds}")
    proc, mark = _marked(runner, "run", "-e", "ns", str(f))
    try:
        wait_for(lambda: _sleeping(seconds) == 1, timeout=60)
        servers = _servers(proc.pid, mark)
        assert len(servers) == 2  # the server and the job's helper
        (server,) = [pid for pid in servers if _ppid(pid) == proc.pid]
        # Forked, never exec'd: repeatr's own command line, under the server's name.
        assert _cmdline(server) == _cmdline(proc.pid)
        assert os.listdir(f"/proc/{server}/task") == [str(server)]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not _servers(proc.pid, mark) and _sleeping(seconds) == 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
