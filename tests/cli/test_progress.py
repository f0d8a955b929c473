"""Progress bars on a terminal only; JSON progress events for scripts."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path

from .conftest import Repeatr


def _big_ware(tmp_path: Path) -> Path:
    path = tmp_path / "big.tar"
    data = tmp_path / "blob"
    data.write_bytes(os.urandom(64 << 20))
    with tarfile.open(path, "w") as tar:
        tar.add(data, arcname="blob")
    return path


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_bars_on_a_terminal_not_when_piped(repeatr: Repeatr, tmp_path: Path) -> None:
    ware = _big_ware(tmp_path)
    ware_id = repeatr("scan", str(ware)).stdout.strip()
    piped = repeatr("unpack", ware_id, "piped", "--source", f"file://{ware}")
    assert piped.code == 0, piped.stderr
    assert piped.stderr == ""  # nothing but the result when not on a terminal

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "repeatr", "unpack", ware_id, "tty", "--source", f"file://{ware}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, cwd=tmp_path,
        env={"REPEATR_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "TERM": "xterm"},
    )
    os.close(terminal)
    screen = _read_all(controller)
    os.close(controller)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.strip().startswith(b"tar:")
    assert b"unpack" in screen and b"MB" in screen  # the bar: phase and bytes done


def test_json_progress_events(repeatr: Repeatr, tmp_path: Path) -> None:
    ware = _big_ware(tmp_path)
    ware_id = repeatr("scan", str(ware)).stdout.strip()
    res = repeatr("unpack", ware_id, "out", "--source", f"file://{ware}", "--format", "json")
    assert res.code == 0, res.stderr
    events = res.events()
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["phase"] == "unpack" for e in progress)
    assert events[-1]["event"] == "result"
