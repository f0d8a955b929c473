"""Formulas with the original's other ware shapes: single-file wares (in and out)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import PACK_FLATTEN, Filters
from repeatr.warehouse import warehouse_for
from tests.gitrepos import make_repos

from .conftest import Runner

pytestmark = pytest.mark.root


def with_sources(runner: Runner, formula: Path, sources: dict[str, str]) -> Path:
    """Point some inputs at other warehouses than the busybox one."""
    doc: dict[str, Any] = json.loads(formula.read_text())
    for path, url in sources.items():
        doc["context"]["fetchUrls"][path] = [url]
    formula.write_text(json.dumps(doc))
    return formula


def test_single_file_input_and_output(runner: Runner, tmp_path: Path) -> None:
    src = tmp_path / "greeting"
    src.write_text("hello from a file ware\n")
    os.chmod(src, 0o644)
    wh = tmp_path / "wh"
    wh.mkdir()
    url = f"ca+file://{wh}/"
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(src, session.file, filters=Filters())
        session.commit(ware)
    f = with_sources(
        runner,
        runner.formula(
            "/bin/sh",
            "-c",
            "cat /task/in/greeting; echo changed >> /task/in/greeting; cp /task/in/greeting /task/out.txt",
            inputs={"/task/in/greeting": str(ware)},
            outputs={"/task/out.txt": {"packtype": "tar"}},
            userinfo={"uid": 0, "gid": 0},  # the file ware is root's (packed as is)
        ),
        {"/task/in/greeting": url},
    )
    for executor in ("ns", "chroot"):
        res = runner.run("run", str(f), "--executor", executor, "--no-memo")
        assert res.code == 0, res.stderr
        assert "out| hello from a file ware" in res.stderr
        # The job's write went to its own copy, never to the cached shelf.
        assert "out| hello from a file ware\n" in res.stderr and "out| changed" not in res.stderr
        expect = tmp_path / f"expect-{executor}"
        expect.write_text("hello from a file ware\nchanged\n")
        os.chmod(expect, 0o644)
        assert res.record()["results"]["/task/out.txt"] == str(
            pack_dir(expect, None, filters=PACK_FLATTEN)
        )


def test_git_input(runner: Runner, tmp_path: Path) -> None:
    repos = make_repos(tmp_path / "repos")
    f = with_sources(
        runner,
        runner.formula(
            "/bin/sh", "-c", "cat /task/src/a.txt /task/src/sm/s.txt; ls -a /task/src; /task/src/dir/run.sh",
            inputs={"/task/src": f"git:{repos.commit}"},
        ),
        {"/task/src": f"file://{repos.main}"},
    )
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    for line in ("out| hello", "out| in the submodule", "out| run"):
        assert line in res.stderr
    assert "out| .git\n" not in res.stderr
    # Cached like any ware: the second run fetches nothing (the source is gone).
    (repos.main / ".git").rename(tmp_path / "moved.git")
    again = runner.run("run", str(f), "--executor", "ns", "--no-memo")
    assert again.code == 0, again.stderr


def test_a_single_file_ware_cannot_be_the_root(runner: Runner, tmp_path: Path) -> None:
    src = tmp_path / "file"
    src.write_text("x\n")
    url = f"file://{tmp_path / 'file.tgz'}"
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(src, session.file, filters=Filters())
        session.commit(ware)
    f = runner.formula("/bin/true")
    doc = json.loads(f.read_text())
    doc["formula"]["inputs"]["/"] = str(ware)
    doc["context"]["fetchUrls"]["/"] = [url]
    f.write_text(json.dumps(doc))
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == Category.ASSEMBLY_INVALID, res.stderr
    assert "single-file" in res.stderr
