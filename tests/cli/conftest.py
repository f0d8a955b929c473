"""Run the real ``repeatr`` command as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clirun import Result
from tests.rio import FIXTURES, SANS_BASE, WITH_BASE

__all__ = ["FIXTURES", "SANS_BASE", "WITH_BASE", "Repeatr", "Result"]


Repeatr = Callable[..., Result]


@pytest.fixture
def repeatr(tmp_path: Path) -> Repeatr:
    """``repeatr(*args, cwd=None)``: run the CLI with a private cache under tmp_path."""

    def run(*args: str, cwd: Path | None = None) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "repeatr", *args],
            capture_output=True,
            text=True,
            cwd=cwd or tmp_path,
            env={"REPEATR_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
            timeout=120,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run
