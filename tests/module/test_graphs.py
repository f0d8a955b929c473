"""Modules run as graphs: a diamond, a fan-out of 32, a failing step, git/pack/literal ingests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category
from tests.gitrepos import git
from tests.module.conftest import Scratch, stage_busybash
from tests.module.workspaces import BUSYBASH, write_lineage, write_module

pytestmark = pytest.mark.root

BASE_IMPORT = {"base": "catalog:froob.org/base:v1:linux-amd64"}


def workspace(scratch: Scratch, name: str = "ws") -> Path:
    ws = scratch.base / name
    (ws / ".timeless").mkdir(parents=True)
    write_lineage(ws, "froob.org/base", {"v1": {"linux-amd64": BUSYBASH}})
    stage_busybash(ws)
    return ws


def step(script: str, inputs: dict[str, str] | None = None, out: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "inputs": {"/": "base", **(inputs or {})},
        "action": {"exec": ["/bin/bash", "-c", script]},
    }
    if out:
        op["outputs"] = {"out": "/task/out"}
    return {"operation": op}


def diamond(middle_left: str) -> dict[str, Any]:
    return {
        "imports": BASE_IMPORT,
        "steps": {
            "top": step("mkdir out; echo top > out/top"),
            "left": step(middle_left, {"/in": "top.out"}),
            "right": step("mkdir out; cat /in/top > out/right", {"/in": "top.out"}),
            "bottom": step(
                "mkdir out; cat /l/left /r/right > out/both", {"/l": "left.out", "/r": "right.out"}
            ),
        },
        "exports": {"both": "bottom.out", "top": "top.out"},
    }


def test_a_diamond(scratch: Scratch) -> None:
    ws = workspace(scratch)
    write_module(ws / "d.org/m", diamond("mkdir out; cat /in/top > out/left"))
    plan = scratch.repeatr(ws / "d.org/m", "module", "plan")
    assert plan.code == 0, plan.stderr
    assert "01: top  run (not run before)" in plan.stdout
    assert "02: left  run (reads top (not memoized))" in plan.stdout
    assert "04: bottom  run (reads left, right (not memoized))" in plan.stdout
    done = scratch.repeatr(ws / "d.org/m", "module", "run", "-j", "2", "--executor", "ns")
    assert done.code == 0, done.stderr
    exports = json.loads(done.stdout)
    assert sorted(exports) == ["both", "top"]
    lineage = json.loads((ws / ".timeless/candidates/default/d.org/m/lineage.tl").read_text())
    assert lineage["name"] == "d.org/m"
    assert lineage["releases"][0]["items"] == exports


def test_a_failing_step_in_the_middle(scratch: Scratch) -> None:
    ws = workspace(scratch)
    write_module(ws / "d.org/m", diamond("echo left fails >&2; exit 3"))
    done = scratch.repeatr(ws / "d.org/m", "module", "run", "--executor", "ns")
    assert done.code == Category.JOB_FAILED
    assert done.stdout == ""
    assert "step 'left' failed: operation 'left' exit code 3 -- eval halted" in done.stderr
    record = done.stderr.split("step 'left' run record:\n", 1)[1]
    assert json.loads(record[: record.index("\n}") + 2])["exitCode"] == 3
    assert "step 'bottom' skipped" in done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"event"')]
    final = {e["step"]: e["state"] for e in events if e["event"] == "step"}
    assert final == {"top": "done", "left": "failed", "right": "done", "bottom": "skipped"}
    assert not (ws / ".timeless/candidates").exists()
    assert "Traceback" not in done.stderr


def test_a_fan_out_of_32(scratch: Scratch) -> None:
    ws = workspace(scratch)
    steps = {f"s{n:02d}": step(f"mkdir out; echo {n} > out/n") for n in range(32)}
    write_module(ws, {
        "imports": BASE_IMPORT, "steps": steps,
        "exports": {name: f"{name}.out" for name in steps},
    })
    done = scratch.repeatr(ws, "module", "run", "-j", "4", "--executor", "ns")
    assert done.code == 0, done.stderr
    exports = json.loads(done.stdout)
    assert sorted(exports) == sorted(steps)
    assert len(set(exports.values())) == 32


def test_ingest_git_of_a_repo_the_test_makes(scratch: Scratch) -> None:
    ws = workspace(scratch)
    repo = ws / "proj" / "src"
    repo.mkdir(parents=True)
    git(repo, "init", "--quiet")
    (repo / "f.txt").write_text("committed\n")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "one")
    commit = git(repo, "rev-parse", "HEAD")
    (repo / "f.txt").write_text("not committed\n")  # the ware is the commit, not the work tree
    write_module(ws / "proj", {
        "imports": {**BASE_IMPORT, "src": "ingest:git:src:HEAD"},
        "steps": {"check": step('[[ $(cat /src/f.txt) == committed ]] && [[ ! -e /src/.git ]]',
                                {"/src": "src"}, out=False)},
        "exports": {"src": "src"},
    })
    done = scratch.repeatr(ws / "proj", "module", "run", "--executor", "ns")
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"src": f"git:{commit}"}
    assert f'"src": git:{commit}' in done.stderr

    write_module(ws / "other", {
        "imports": {**BASE_IMPORT, "src": "ingest:git:../proj/src:refs/heads/nope"},
        "steps": {"s": step("true", {"/src": "src"}, out=False)},
    })
    missing = scratch.repeatr(ws / "other", "module", "run", "--executor", "ns")
    assert missing.code == 1
    assert "import 'src'" in missing.stderr
    assert "refs/heads/nope" in missing.stderr

    (repo / "sub").mkdir()
    write_module(ws / "other", {
        "imports": {**BASE_IMPORT, "src": "ingest:git:../proj/src/sub:HEAD"},
        "steps": {"s": step("true", {"/src": "src"}, out=False)},
    })
    not_root = scratch.repeatr(ws / "other", "module", "run", "--executor", "ns")
    assert not_root.code == 1
    assert "is not the root of a git repository" in not_root.stderr


def test_ingest_pack_and_literal(scratch: Scratch) -> None:
    ws = workspace(scratch)
    data = ws / "proj" / "data"
    data.mkdir(parents=True)
    (data / "hello.txt").write_text("packed\n")
    write_module(ws / "proj", {
        "imports": {"base": f"ingest:literal:{BUSYBASH}", "data": "ingest:pack:tar:./data"},
        "steps": {"read": step("mkdir out; cp /data/hello.txt out/", {"/data": "data"})},
        "exports": {"data": "data", "copy": "read.out"},
    })
    plan = scratch.repeatr(ws / "proj", "--format", "json", "module", "plan")
    assert plan.code == 0, plan.stderr
    planned = plan.events()[0]["pins"]
    assert not any(p.name != "6q7" for p in (ws / ".timeless/warehouse").iterdir()), (
        "plan stored nothing"
    )
    done = scratch.repeatr(ws / "proj", "module", "run", "--executor", "ns")
    assert done.code == 0, done.stderr
    exports = json.loads(done.stdout)
    assert planned == {"base": BUSYBASH, "data": exports["data"]}
    digest = exports["data"].partition(":")[2]
    assert (ws / ".timeless/warehouse" / digest[:3] / digest[3:6] / digest).is_file()


def test_target_warehouses_get_every_output(scratch: Scratch) -> None:
    ws = workspace(scratch)
    write_module(ws / "d.org/m", diamond("mkdir out; cat /in/top > out/left"))
    target = scratch.base / "target"
    target.mkdir()
    done = scratch.repeatr(
        ws / "d.org/m", "module", "run", "--executor", "ns", "--target", f"ca+file://{target}"
    )
    assert done.code == 0, done.stderr
    for ware in json.loads(done.stdout).values():
        digest = ware.partition(":")[2]
        assert (target / digest[:3] / digest[3:6] / digest).is_file()


def test_nested_modules_read_their_parents_scope(scratch: Scratch) -> None:
    ws = workspace(scratch)
    write_module(ws, {
        "imports": BASE_IMPORT,
        "steps": {
            "make": step("mkdir out; echo made > out/f"),
            "outer": {"module": {
                "imports": {"img": "parent:base", "made": "parent:make.out"},
                "steps": {
                    "inner": {"module": {
                        "imports": {"img": "parent:img", "thing": "parent:made"},
                        "steps": {"deep": {"operation": {
                            "inputs": {"/": "img", "/t": "thing"},
                            "action": {"exec": ["/bin/bash", "-c",
                                                "mkdir out; cat /t/f /t/f > out/twice"]},
                            "outputs": {"out": "/task/out"},
                        }}},
                        "exports": {"twice": "deep.out"},
                    }},
                    "after": {"operation": {
                        "inputs": {"/": "img", "/in": "inner.twice"},
                        "action": {"exec": ["/bin/bash", "-c",
                                            '[[ $(cat /in/twice) == "$(printf "made\\nmade")" ]]']},
                    }},
                },
                "exports": {"result": "inner.twice"},
            }},
        },
        "exports": {"result": "outer.result"},
    })
    plan = scratch.repeatr(ws, "--format", "json", "module", "plan")
    assert plan.events()[0]["order"] == [
        "make", "outer", "outer.inner", "outer.inner.deep", "outer.after",
    ]
    done = scratch.repeatr(ws, "--format", "json", "module", "run", "--executor", "ns")
    assert done.code == 0, done.stderr + done.stdout
    events = done.events()
    finals = {e["step"]: e["state"] for e in events if e["event"] == "step"}
    assert finals == {"make": "done", "outer.inner.deep": "done", "outer.after": "done"}
    assert list(events[-1]["exports"]) == ["result"]


def test_a_step_whose_input_cannot_be_fetched(scratch: Scratch) -> None:
    ws = workspace(scratch)
    absent = BUSYBASH.replace("Wr283", "Wr284")  # well formed, in no warehouse
    write_module(ws, {
        "imports": {"gone": f"ingest:literal:{absent}", **BASE_IMPORT},
        "steps": {"s": step("true", {"/gone": "gone"}, out=False), "t": step("true", out=False)},
    })
    done = scratch.repeatr(ws, "module", "run", "--executor", "ns")
    assert done.code == Category.WARE_NOT_FOUND, done.stderr
    assert "step 's' failed" in done.stderr
    assert "[ware not found, exit 5]" in done.stderr
    assert "Traceback" not in done.stderr


def test_ctrl_c_cancels_the_whole_graph(scratch: Scratch) -> None:
    import os
    import signal
    import subprocess
    import sys

    ws = workspace(scratch)
    write_module(ws, {
        "imports": BASE_IMPORT,
        "steps": {
            "slow1": step("sleep 600; mkdir out"),
            "slow2": step("sleep 600", out=False),
            "after": step("true", {"/x": "slow1.out"}),
        },
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "repeatr", "module", "run", "-j", "2", "--executor", "ns",
         "--cache", os.fspath(scratch.state)],
        cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "REPEATR_ASYNC_BACKEND": scratch.backend},
    )
    assert proc.stderr is not None
    running: set[str] = set()
    lines: list[str] = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith('{"event"'):
            event = json.loads(line)
            if event["event"] == "output" or (
                event["event"] == "step" and event["state"] == "running"
            ):
                running.add(event["step"])
        if running >= {"slow1", "slow2"}:
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    stderr = "".join(lines) + rest
    assert proc.returncode == Category.CANCELLED, stderr
    assert "Traceback" not in stderr
    runs = scratch.state / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "a work dir was left behind"
    assert not (ws / ".timeless/candidates").exists()


def test_fail_fast_cancels_the_steps_still_running(scratch: Scratch) -> None:
    ws = workspace(scratch)
    write_module(ws, {
        "imports": BASE_IMPORT,
        "steps": {
            "bad": step("sleep 0.5; exit 7", out=False),
            "slow": step("sleep 600", out=False),
        },
    })
    done = scratch.repeatr(ws, "module", "run", "-j", "2", "--fail-fast", "--executor", "ns",
                           timeout=120)
    assert done.code == Category.JOB_FAILED, done.stderr
    assert "step 'bad' failed" in done.stderr
    assert "step 'slow' skipped" in done.stderr
