"""Module tests: a scratch tmpfs holding a copy of a reach example (or a new workspace) and a state dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from repeatr.linux import libc
from tests.clirun import Result
from tests.module.workspaces import BUSYBASH

FIXTURES = Path(__file__).parent.parent / "fixtures"
EXAMPLES = FIXTURES / "reach" / "examples"
BUSYBASH_TGZ = FIXTURES / "repeatr" / "fixtures" / "busybash.tgz"


@dataclass
class Scratch:
    """A tmpfs with ``state`` (repeatr's cache) and room for workspaces."""

    base: Path
    backend: str

    @property
    def state(self) -> Path:
        return self.base / "state"

    def example(self, name: str) -> Path:
        """A copy of reach's example ``name`` whose staging warehouse holds busybash."""
        ws = self.base / name
        shutil.copytree(EXAMPLES / name, ws)
        stage_busybash(ws)
        return ws

    def repeatr(self, cwd: Path, *args: str, timeout: float = 180) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "repeatr", *args, "--cache", os.fspath(self.state)],
            cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, "REPEATR_ASYNC_BACKEND": self.backend},
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)


def stage_busybash(ws: Path) -> None:
    digest = BUSYBASH.partition(":")[2]
    shelf = ws / ".timeless" / "warehouse" / digest[:3] / digest[3:6]
    shelf.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BUSYBASH_TGZ, shelf / digest)


@contextmanager
def _tmpfs() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="repeatr-module-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=256m,mode=755")
    try:
        yield base
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


@pytest.fixture(params=["asyncio", "trio"])
def scratch(request: pytest.FixtureRequest) -> Iterator[Scratch]:
    """For the CLI (a subprocess on each anyio backend)."""
    with _tmpfs() as base:
        yield Scratch(base, request.param)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lib_scratch(anyio_backend: str) -> Iterator[Scratch]:
    """For the library, called in this process on ``anyio_backend``."""
    with _tmpfs() as base:
        yield Scratch(base, anyio_backend)
