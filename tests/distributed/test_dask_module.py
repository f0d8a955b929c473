"""``repeatr module run --dask``: a module of twelve steps on the test cluster gives the
exports a local ``module run`` gives, and a re-run runs nothing.

The module's base is a catalog import whose ware is only in the workspace's
staging warehouse (a ``ca+file://`` path of the client): the client copies
it into the cluster's warehouse before the first step is submitted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.clirun import Result
from tests.distributed.conftest import DaskEnv
from tests.module.conftest import stage_busybash
from tests.module.workspaces import BUSYBASH, write_lineage, write_module

pytestmark = [pytest.mark.root, pytest.mark.slow]


def op(script: str, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    return {"operation": {
        "inputs": {"/": "base", **(inputs or {})},
        "action": {"exec": ["/bin/bash", "-c", script]},
        "outputs": {"out": "/task/out"},
    }}


def twelve_step_module() -> dict[str, Any]:
    steps = {
        "top": op("mkdir out; echo top > out/top"),
        "left": op("mkdir out; tr o O < /in/top > out/left", {"/in": "top.out"}),
        "right": op("mkdir out; rev /in/top > out/right", {"/in": "top.out"}),
        "bottom": op("mkdir out; cat /l/left /r/right > out/both",
                     {"/l": "left.out", "/r": "right.out"}),
        **{f"fan{n}": op(f"mkdir out; (cat /in/both; echo {n}) > out/fan",
                         {"/in": "bottom.out"}) for n in range(1, 7)},
        "gather": op("mkdir out; cat /f*/fan > out/all",
                     {f"/f{n}": f"fan{n}.out" for n in range(1, 7)}),
        "final": op("mkdir out; cat /a/all /t/top | wc -c > out/size",
                    {"/a": "gather.out", "/t": "top.out"}),
    }
    return {
        "imports": {"base": "catalog:froob.org/base:v1:linux-amd64"},
        "steps": steps,
        "exports": {name: f"{name}.out" for name in steps},
    }


def workspace(root: Path) -> Path:
    (root / ".timeless").mkdir(parents=True)
    write_lineage(root, "froob.org/base", {"v1": {"linux-amd64": BUSYBASH}})
    stage_busybash(root)
    write_module(root, twelve_step_module())
    return root


def module_run(ws: Path, state: Path, *args: str) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "repeatr", "module", "run", *args, "--cache", os.fspath(state)],
        cwd=ws, capture_output=True, text=True, timeout=300, check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def step_states(result: Result) -> dict[str, str]:
    events = [json.loads(line) for line in result.stderr.splitlines()
              if line.startswith('{"event"')]
    return {e["step"]: e["state"] for e in events if e["event"] == "step"}


def test_a_module_of_twelve_steps_on_dask_exports_what_a_local_run_does(
    dask_env: DaskEnv,
) -> None:
    base = dask_env.area.base / "modules"
    local = module_run(workspace(base / "local"), base / "local-state", "--executor", "ns")
    assert local.code == 0, local.stderr
    expected = json.loads(local.stdout)
    assert len(expected) == 12

    ws = workspace(base / "dask")
    dask = ("--dask", dask_env.cluster.address, "--warehouse", dask_env.warehouse)
    first = module_run(ws, base / "dask-state", *dask)
    assert first.code == 0, first.stderr
    assert json.loads(first.stdout) == expected
    assert set(step_states(first).values()) == {"done"}
    lineage = json.loads((ws / ".timeless/candidates/default/unnamed/lineage.tl").read_text())
    assert lineage["releases"][0]["items"] == expected

    again = module_run(ws, base / "dask-state", *dask)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout) == expected
    assert set(step_states(again).values()) == {"memoized"}


def test_module_run_dask_needs_a_warehouse(dask_env: DaskEnv) -> None:
    ws = workspace(dask_env.area.base / "modules-nowh")
    result = module_run(ws, dask_env.area.base / "modules-nowh-state",
                        "--dask", dask_env.cluster.address)
    assert result.code == 1
    assert "--warehouse" in result.stderr
