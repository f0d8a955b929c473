"""The real ``repeatr`` CLI as a subprocess: its result, and a runner on a private state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def record(self) -> dict[str, Any]:
        """stdout as one JSON document (``repeatr run``'s record in text mode)."""
        return dict(json.loads(self.stdout))

    def events(self) -> list[dict[str, Any]]:
        """stdout as JSON lines (``--format json``)."""
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


class StateRunner:
    """Runs ``repeatr ... --cache STATE``; tests write their files under ``dir``."""

    #: Seconds a ``run`` may take.
    timeout: float = 120

    def __init__(self, state: Path, tmp: Path) -> None:
        self.state = state
        self.dir = tmp

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "repeatr", *args, "--cache", os.fspath(self.state)]

    def run(self, *args: str, timeout: float | None = None) -> Result:
        proc = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def work_dirs(self) -> list[str]:
        runs = self.state / "runs"
        return sorted(os.listdir(runs)) if runs.exists() else []
