"""Fixtures for cache tests: wares built in tmp_path, served from file:// warehouses,
and worker processes (``tests/cache/worker.py``) to contend with."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from gzip import compress as gzip_compress
from pathlib import Path
from typing import Any

import pytest

from repeatr.fileset.pack import scan_stream
from repeatr.model.wareid import WareID
from tests import rio
from tests.rio import FIXTURES

REPO = Path(__file__).resolve().parents[2]
WITH_BASE = WareID.parse(rio.WITH_BASE)
SANS_BASE = WareID.parse(rio.SANS_BASE)


@dataclass(frozen=True)
class Ware:
    id: WareID
    path: Path

    @property
    def url(self) -> str:
        return f"file://{self.path}"


def make_ware(
    path: Path, files: dict[str, bytes | str], *, mtime: float = 1600000000.25, gzip: bool = True
) -> Ware:
    """A gzip'd PAX tar of ``files`` (bytes: a file; str: a symlink target).

    PAX with a fractional mtime, as Python's tarfile writes by default: the
    sub-second part is what makes a naive re-hash differ from the unpack's.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        root = tarfile.TarInfo("./")
        root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o755, mtime
        tar.addfile(root)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid = mtime, 1000, 1000
            if isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    data = gzip_compress(buf.getvalue(), mtime=0) if gzip else buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    ware = scan_stream(io.BytesIO(data))
    return Ware(ware, path)


def fixture_ware(tmp_path: Path, name: str, ware: WareID) -> Ware:
    dest = tmp_path / "wares" / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes((FIXTURES / name).read_bytes())
    return Ware(ware, dest)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "cache-root"


def tree(path: Path) -> list[str]:
    """Every entry below ``path``, relative, sorted (empty if missing)."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


class Workers:
    """Worker processes started by a test; all are killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, **spec: Any) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cache.worker", json.dumps(spec)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def result(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
        out, err = proc.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        assert lines, f"worker {proc.pid} printed nothing (rc {proc.returncode}): {err}"
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    try:
        yield w
    finally:
        w.kill_all()


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
