"""If the process running an executor is SIGKILLed, the job and its mounts go too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from repeatr.executors.base import available_names
from tests.rootfs import REPO, ScratchArea, processes_with

pytestmark = pytest.mark.root

PARENT = r"""
import sys, anyio
from pathlib import Path
from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Overlay
from repeatr.executors.base import JobSpec, load
from repeatr.executors.protocol import JobNetwork, NetworkPolicy

name, rootfs, workdir, marker = sys.argv[1:]
ex = load(name)()
job = JobSpec(
    argv=("sh", "-c", "echo ready; sleep 100; exit 0", marker),
    env=(("PATH", "/bin:/usr/bin"),),
    workdir=Path(workdir),
    mounts=(Overlay((rootfs,), "/", workdir + "/upper", workdir + "/work"), *system_mounts()),
    cradle=cradle_steps(cwd="/task", home="/home/reuser", uid=1000, gid=1000),
    cwd="/task",
    network=JobNetwork(policy=NetworkPolicy.NONE if NetworkPolicy.NONE in ex.capabilities().networks else NetworkPolicy.HOST),
)

async def on_output(stream, line):
    sys.stdout.write(line.decode())
    sys.stdout.flush()

anyio.run(lambda: ex.run(job, on_output=on_output))
"""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read()
    except OSError:
        return ""


def _helpers(parent_pid: int) -> list[int]:
    """The sandbox server started by ``parent_pid`` and its helpers (forks of it: the same
    command line, whose last argument is the pid of ``parent_pid``)."""
    return [
        pid for pid in processes_with("repeatr.executors.forkserver")
        if _cmdline(pid).endswith(f"\0{parent_pid}\0")
    ]


@pytest.mark.parametrize("name", [str(n) for n in available_names()])
def test_sigkill_parent_kills_job(area: ScratchArea, workdir: Path, name: str) -> None:
    marker = f"repeatr-orphan-{uuid.uuid4().hex}"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, name, os.fspath(area.rootfs), os.fspath(workdir), marker],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    if name == "vm":
        # The job's processes are the guest's: on the host it is qemu and
        # virtiofsd, whose command lines name the run's VM dir.
        marker = os.fspath(workdir / "vm")
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == b"ready\n"
        assert processes_with(marker), "the job is not running"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 2
        while (processes_with(marker) or _helpers(parent.pid)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(marker) == [], "the job outlived its parent"
        assert _helpers(parent.pid) == [], "the helper outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
