"""Fixtures for whole runs: a busybox rootfs packed into a real warehouse, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import Filters
from repeatr.warehouse import warehouse_for
from tests.rootfs import ScratchArea, session_rootfs


@dataclass(frozen=True)
class Busybox:
    area: ScratchArea
    ware: str
    warehouse: str  # ca+file URL holding the ware


@pytest.fixture(scope="session")
def busybox() -> Iterator[Busybox]:
    if os.geteuid() != 0:
        pytest.fail("run tests need root (real namespaces and mounts)")
    with session_rootfs() as area:
        wh = area.base / "warehouse"
        wh.mkdir()
        url = f"ca+file://{wh}/"
        with warehouse_for(url).start_save() as session:
            ware = pack_dir(area.rootfs, session.file, filters=Filters())
            session.commit(ware)
        yield Busybox(area, str(ware), url)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def record(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout))


class Runner:
    """Writes formulas and runs ``repeatr`` on them, with a private state dir."""

    def __init__(self, busybox: Busybox, tmp: Path) -> None:
        self.busybox = busybox
        self.dir = tmp
        self.state = busybox.area.new_workdir()  # on the tmpfs: fast small-file work

    def formula(
        self,
        *argv: str,
        outputs: dict[str, Any] | None = None,
        inputs: dict[str, str] | None = None,
        save: dict[str, str] | None = None,
        name: str = "formula.json",
        **action: Any,
    ) -> Path:
        all_inputs = {"/": self.busybox.ware, **(inputs or {})}
        doc = {
            "formula": {
                "inputs": all_inputs,
                "action": {"exec": list(argv), **action},
                "outputs": outputs or {},
            },
            "context": {
                "fetchUrls": {
                    path: [self.busybox.warehouse]
                    for path, ware in all_inputs.items()
                    if not ware.startswith("mount:")
                },
                "saveUrls": save or {},
            },
        }
        path = self.dir / name
        path.write_text(json.dumps(doc))
        return path

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "repeatr", *args, "--cache", os.fspath(self.state)]

    def run(self, *args: str, timeout: float = 120) -> Result:
        proc = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    @contextmanager
    def start(self, *args: str) -> Iterator[subprocess.Popen[str]]:
        """A background ``repeatr``; killed and reaped on the way out, whatever happened."""
        proc = subprocess.Popen(
            self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    def work_dirs(self) -> list[str]:
        runs = self.state / "runs"
        return sorted(os.listdir(runs)) if runs.exists() else []


@pytest.fixture
def runner(busybox: Busybox, tmp_path: Path) -> Runner:
    return Runner(busybox, tmp_path)


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
