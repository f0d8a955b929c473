"""examples/: the make pipeline and the xargs loop, run for real (docs/make.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rootfs import MKROOTFS, REPO

from .conftest import Stress

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPEATR = f"{sys.executable} -m repeatr"


@pytest.fixture
def example(stress: Stress) -> Path:
    """A copy of examples/ on the tmpfs, with the rootfs ware built by its ./setup."""
    where = stress.dir / "examples"
    shutil.copytree(REPO / "examples", where, ignore=shutil.ignore_patterns("build", "warehouse"))
    res = make(stress, where, "build/rootfs.ware_id")
    assert res.returncode == 0, res.stderr
    return where


def make(stress: Stress, where: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REPEATR_CACHE": str(stress.state), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        ["make", "-j4", f"REPEATR={REPEATR}", f"MKROOTFS={MKROOTFS}", f"PYTHON={sys.executable}", *targets],
        cwd=where, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_pipeline_runs_and_reruns_only_what_changed(stress: Stress, example: Path) -> None:
    res = make(stress, example)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (example / "build" / "report.txt").read_text() == "evens: 500\nsum: 500500\n"
    for stage in ("numbers", "evens", "sum", "report"):
        record = json.loads((example / "build" / stage / "record.json").read_text())
        ware = (example / "build" / stage / "_task_out.ware_id").read_text().strip()
        assert record["exitCode"] == 0 and record["results"] == {"/task/out": ware}
        h = ware.split(":", 1)[1]
        assert (example / "warehouse" / h[:3] / h[3:6] / h).is_file()
    again = make(stress, example)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout
    # A change to one stage that does not change its output: it reruns, nothing after it.
    report_record = example / "build" / "report" / "record.json"
    before = report_record.stat().st_mtime_ns
    tmpl = example / "formulas" / "evens.json.in"
    tmpl.write_text(tmpl.read_text().replace("grep ", "grep -E "))
    res = make(stress, example)
    assert res.returncode == 0, res.stderr
    assert "--output-dir build/evens" in res.stdout and "--output-dir build/report" not in res.stdout
    assert report_record.stat().st_mtime_ns == before
    # A change that does: the stages after it rerun too.
    tmpl = example / "formulas" / "sum.json.in"
    tmpl.write_text(tmpl.read_text().replace("print s", "print s * 2"))
    res = make(stress, example)
    assert res.returncode == 0, res.stderr
    assert "--output-dir build/sum" in res.stdout and "--output-dir build/report" in res.stdout
    assert (example / "build" / "report.txt").read_text() == "evens: 500\nsum: 1001000\n"


def test_a_failing_stage_stops_make(stress: Stress, example: Path) -> None:
    tmpl = example / "formulas" / "sum.json.in"
    tmpl.write_text(tmpl.read_text().replace("mkdir -p /task/out &&", "exit 3;"))
    res = make(stress, example)
    assert res.returncode != 0
    assert "Error 20" in res.stderr  # repeatr's "the job failed"
    assert not (example / "build" / "sum" / "record.json").exists()
    assert not (example / "build" / "report.json").exists()
    assert not (example / "build" / "report.txt").exists()
    assert stress.work_dirs() == []


def test_xargs_loop(stress: Stress, example: Path) -> None:
    env = {**os.environ, "REPEATR_CACHE": str(stress.state), "REPEATR": REPEATR, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        ["./loop.sh", "8", "4"], cwd=example, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 8 and all(": tar:" in line for line in lines), res.stdout
    assert len({line.split(": ")[1] for line in lines}) == 8  # counting to 1..8: 8 outputs
    res = subprocess.run(
        ["./loop.sh", "8", "4"], cwd=example, env={**env, "FAIL_AT": "3"},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert res.returncode == 123, res.stdout + res.stderr  # xargs: some invocation failed
    assert "count-3: FAILED" in res.stdout and res.stdout.count(": tar:") == 7
    assert stress.work_dirs() == []


def test_output_dir_layout(stress: Stress) -> None:
    out = stress.dir / "results"
    f = stress.formula(
        "mkdir -p /task/out /x/y && echo a > /task/out/a && echo b > /x/y/b",
        name="two.json",
        outputs=("/task/out", "/x/y"),
        userinfo={"uid": 0, "gid": 0},
    )
    res = stress.run("run", str(f), "-e", "ns", "--output-dir", str(out))
    assert res.code == 0, res.stderr
    assert sorted(os.listdir(out)) == ["_task_out.ware_id", "_x_y.ware_id", "record.json"]
    record = json.loads((out / "record.json").read_text())
    assert record == res.record()
    assert (out / "_x_y.ware_id").read_text() == record["results"]["/x/y"] + "\n"
    # Same outputs again (a memo hit, then a real run): the ID files keep their mtime.
    stamp = (out / "_x_y.ware_id").stat().st_mtime_ns
    for extra in ((), ("--no-memo",)):
        assert stress.run("run", str(f), "-e", "ns", "--output-dir", str(out), *extra).code == 0
    assert (out / "_x_y.ware_id").stat().st_mtime_ns == stamp
    # A failed job writes nothing.
    failed = stress.dir / "failed"
    bad = stress.formula("exit 1", name="bad.json", outputs=("/task/out",))
    assert stress.run("run", str(bad), "-e", "ns", "--output-dir", str(failed)).code == 20
    assert not failed.exists()
