"""``repeatr doctor`` lists every executor with its state, and the kernel's features."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from repeatr.executors.base import ExecutorName
from tests.executors.conftest import RUNTIME_DEFAULT_DIRS
from tests.rootfs import REPO
from tests.unprivileged import run_as_nobody

pytestmark = pytest.mark.root


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repeatr", "doctor", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )


def test_doctor_json_lists_every_executor() -> None:
    runtime_dirs = [d for d in RUNTIME_DEFAULT_DIRS if os.path.exists(d)]
    proc = doctor("--format", "json", "--runs", "1")
    assert [d for d in RUNTIME_DEFAULT_DIRS if os.path.exists(d)] == runtime_dirs
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    report = next(e for e in events if e["event"] == "result")
    by_name = {e["name"]: e for e in report["executors"]}
    assert set(by_name) == {n.value for n in ExecutorName}
    for entry in by_name.values():
        if entry["available"]:
            assert entry["version"]
            assert entry["startMs"] is not None and entry["startMs"] > 0
            assert "timeout" in entry["limits"]
        else:
            assert entry["problem"]
    assert by_name["runc"]["version"].startswith("runc version")
    assert report["kernel"]["cgroups"]["layout"] in ("v1", "v2", "hybrid", "none")
    assert report["kernel"]["overlayfs"] is True
    assert report["auto"]["chosen"] == "ns"


def test_doctor_text() -> None:
    proc = doctor("--no-measure")
    assert proc.returncode == 0, proc.stderr
    for name in ExecutorName:
        assert f"  {name.value} " in proc.stdout
    assert "auto picks: ns" in proc.stdout
    assert "cgroups" in proc.stdout


def test_doctor_without_root_skips_measuring() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop it")
    proc = run_as_nobody(["doctor", "--format", "json"], timeout=120)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    reports = [e for e in events if e["event"] == "result"]
    assert reports, proc.stderr
    report = reports[0]
    assert all(not e["available"] for e in report["executors"])
    assert proc.returncode == 42
