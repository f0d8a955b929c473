"""``repeatr run --dask … --warehouse …``: the real CLI against the test cluster (``conftest.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category
from tests.clirun import Result, StateRunner
from tests.distributed.cluster import jobs_with, wait_until
from tests.distributed.conftest import DaskEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]


class DaskCli(StateRunner):
    def __init__(self, env: DaskEnv, tmp: Path) -> None:
        super().__init__(env.area.new_workdir(), tmp)
        self.env = env

    def formula(self, name: str, script: str, **action: Any) -> str:
        doc = {
            "formula": {
                "inputs": {"/": self.env.base},
                "action": {"exec": ["/bin/sh", "-c", script],
                           "userinfo": {"uid": 0, "gid": 0}, **action},
                "outputs": {"/out": {"packtype": "tar"}},
            },
        }
        path = self.dir / name
        path.write_text(json.dumps(doc))
        return os.fspath(path)

    def dask(self, *args: str) -> Result:
        return self.run(
            "run", "--dask", self.env.cluster.address, "--warehouse", self.env.warehouse, *args
        )


@pytest.fixture
def cli(dask_env: DaskEnv, tmp_path: Path) -> DaskCli:
    return DaskCli(dask_env, tmp_path)


def test_one_formula_prints_its_record_and_is_memoized(cli: DaskCli) -> None:
    nonce = uuid.uuid4().hex
    formula = cli.formula("f.json", f"mkdir /out && echo {nonce} > /out/x; echo said {nonce}")
    first = cli.dask(formula)
    assert first.code == 0, first.stderr
    record = first.record()
    assert record["exitCode"] == 0 and record["results"]["/out"].startswith("tar:")
    assert f"out| said {nonce}" in first.stderr
    assert "Dask dashboard: http://127.0.0.1:" in first.stderr

    again = cli.dask(formula)
    assert again.code == 0, again.stderr
    assert again.record() == record  # the stored record (same guid): nothing ran
    assert "out| said" not in again.stderr


def test_a_batch_prints_each_record_after_its_file_and_exits_as_locally(cli: DaskCli) -> None:
    nonce = uuid.uuid4().hex
    good = cli.formula("good.json", f"mkdir /out && echo {nonce} > /out/x")
    fails = cli.formula("fails.json", f"echo {nonce}; exit 4")
    broken = os.fspath(cli.dir / "broken.json")
    Path(broken).write_text("{not json")
    result = cli.dask("--format", "json", good, fails, broken)

    events = result.events()
    records = {e["file"]: e["record"] for e in events if e["event"] == "result"}
    assert records[good]["exitCode"] == 0
    assert records[fails]["exitCode"] == 4
    errors = [e for e in events if e["event"] == "error"]
    assert [e["file"] for e in errors] == [broken]
    assert errors[0]["exitCode"] == Category.USAGE
    # The most severe of theirs: a bad file (usage) before a job that failed.
    assert result.code == Category.USAGE


def test_ignore_job_exit_and_the_job_failed_status(cli: DaskCli) -> None:
    fails = cli.formula("fails.json", f"echo {uuid.uuid4().hex}; exit 4")
    assert cli.dask(fails).code == Category.JOB_FAILED
    assert cli.dask("--ignore-job-exit", fails).code == 0


def test_dask_needs_a_warehouse_of_many_wares(cli: DaskCli) -> None:
    formula = cli.formula("f.json", "true")
    missing = cli.run("run", "--dask", cli.env.cluster.address, formula)
    assert missing.code == Category.USAGE
    assert "--warehouse" in missing.stderr
    single = cli.run("run", "--dask", cli.env.cluster.address, "--warehouse",
                     f"file://{cli.dir}/one.tar", formula)
    assert single.code == Category.USAGE
    assert "ca+file://" in single.stderr


def test_an_unreachable_scheduler_is_an_executor_error(cli: DaskCli) -> None:
    from tests.distributed.cluster import free_port

    formula = cli.formula("f.json", "true")
    result = cli.run("run", "--dask", f"tcp://127.0.0.1:{free_port()}", "--warehouse",
                     cli.env.warehouse, formula, timeout=120)
    assert result.code == Category.EXECUTOR
    assert "cannot reach the Dask scheduler" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_distributed_dask_says_what_to_install(tmp_path: Path) -> None:
    formula = tmp_path / "f.json"
    formula.write_text("{}")
    code = (
        "import sys; sys.modules['distributed'] = None\n"  # what an install without the extra has
        "from repeatr.cli.main import main\n"
        f"sys.exit(main(['run', '--dask', 'tcp://127.0.0.1:1', '--warehouse',"
        f" 'ca+file:///nowhere/', {str(formula)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == Category.USAGE
    assert "pip install 'repeatr[dask]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_without_dask_never_imports_distributed(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from repeatr.cli.main import main\n"
        f"main(['run', '--cache', {str(tmp_path)!r}, {str(tmp_path / 'missing.json')!r}])\n"
        "main(['run', '--help']) if False else None\n"
        "print('distributed' in sys.modules, 'repeatr.distributed' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.stdout.strip() == "False False", result.stderr


def test_ctrl_c_cancels_the_job_on_its_worker(cli: DaskCli) -> None:
    nonce = uuid.uuid4().hex
    formula = cli.formula("slow.json", "sleep 600", env={"NONCE": nonce})
    proc = subprocess.Popen(
        cli.command("run", "--dask", cli.env.cluster.address, "--warehouse", cli.env.warehouse,
                    formula),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert wait_until(lambda: bool(jobs_with(nonce)) or proc.poll() is not None)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == Category.CANCELLED, err
    assert "cancelled by SIGINT" in err
    assert wait_until(lambda: not jobs_with(nonce)), jobs_with(nonce)
