"""Packing reads a job's root through a descriptor, never through a pid that may be reused."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from repeatr.linux.procroot import fd_path, hold_root

pytestmark = pytest.mark.root


def _in_own_root(root: str) -> subprocess.Popen[bytes]:
    """A process whose root is ``root`` (a private mount namespace, chrooted)."""
    return subprocess.Popen(["unshare", "-m", "--root", root, "/bin/sleep", "600"])


def test_held_root_outlives_the_pid(tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(tmp_path, "root")
    os.makedirs(os.path.join(root, "bin"))
    subprocess.run(["cp", "-L", "/bin/busybox", os.path.join(root, "bin", "sleep")], check=True)
    with open(os.path.join(root, "marker"), "w") as f:
        f.write("ours\n")
    proc = _in_own_root(root)
    pidfd = os.pidfd_open(proc.pid)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(f"/proc/{proc.pid}/root/marker"):  # until it has chrooted
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.01)
        fd = hold_root(proc.pid, pidfd)
        try:
            assert os.path.exists(os.path.join(fd_path(fd), "marker"))  # its root, not ours
            proc.kill()
            proc.wait()  # reaped: its pid is free for anyone
            with pytest.raises(ProcessLookupError):
                hold_root(proc.pid, pidfd)
            # The held descriptor still leads to that root, not to whatever has the pid.
            with open(os.path.join(fd_path(fd), "marker")) as f:
                assert f.read() == "ours\n"
        finally:
            os.close(fd)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(pidfd)
