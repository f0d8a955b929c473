"""Fixtures for whole runs: a busybox rootfs packed into a real warehouse, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
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
from tests.clirun import StateRunner
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


class Runner(StateRunner):
    """Writes formulas and runs ``repeatr`` on them, with a private state dir."""

    def __init__(self, busybox: Busybox, tmp: Path) -> None:
        # The state on the tmpfs: fast small-file work.
        super().__init__(busybox.area.new_workdir(), tmp)
        self.busybox = busybox

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


@pytest.fixture
def runner(busybox: Busybox, tmp_path: Path) -> Runner:
    return Runner(busybox, tmp_path)


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)
