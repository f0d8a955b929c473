"""Rough input refused before anything runs: through the CLI, with the exit category, no traceback.

Issue 12 point 7 (deep nesting, a 20 MB argv, a 3 MB argument, duplicate
keys, a hostname with NUL or of 200 characters) and issue 13 point 7 (the
original's JSON dialect: commas between entries are optional).
"""

from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category
from repeatr.model.formula import MAX_ARG_STRLEN, MAX_HOSTNAME
from repeatr.model.jsonload import MAX_NESTING
from tests.clirun import Result

from .conftest import Runner

pytestmark = pytest.mark.root

#: The commands that read a formula: each must refuse the same way.
COMMANDS = [("run",), ("formula", "id"), ("explain",)]


def _write(runner: Runner, text: str | bytes, name: str = "formula.json") -> Path:
    path = runner.dir / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _action_formula(runner: Runner, **action: Any) -> Path:
    doc = {
        "formula": {"inputs": {"/": runner.busybox.ware}, "action": action},
        "context": {"fetchUrls": {"/": [runner.busybox.warehouse]}},
    }
    return _write(runner, json.dumps(doc))


def _refused(runner: Runner, path: Path, *field: str) -> None:
    for command in COMMANDS:
        res = runner.run(*command, str(path))
        assert res.code == Category.USAGE, (command, res.stderr[-2000:])
        assert "Traceback" not in res.stderr
        for text in field:
            assert text in res.stderr, (command, res.stderr[-2000:])
        assert len(res.stderr) < 10_000, "the error repeats the input"
    assert runner.work_dirs() == []  # nothing ran


def test_deep_nesting(runner: Runner) -> None:
    path = _write(runner, '{"formula": {"action": {"exec": ' + "[" * 100_000)
    _refused(runner, path, f"nested more than {MAX_NESTING} levels deep", "formula.json:1:")


def test_duplicate_key(runner: Runner) -> None:
    action = {"exec": ["/bin/true"], "env": {"A": "1"}}
    doc = json.dumps({"formula": {"inputs": {"/": runner.busybox.ware}, "action": action}})
    path = _write(runner, doc.replace('"A": "1"', '"A": "1", "A": "2"'))
    _refused(runner, path, 'formula.action.env["A"]: duplicate key')


def test_huge_argv(runner: Runner) -> None:
    """20 MB of arguments, each under the per-string limit: the total is refused."""
    path = _action_formula(runner, exec=["/bin/true", *(["x" * 100_000] * 200)])
    _refused(runner, path, "formula.action.exec: argument list too long")


def test_argument_longer_than_the_kernel_takes(runner: Runner) -> None:
    path = _action_formula(runner, exec=["/bin/true", "x" * (3 << 20)])
    _refused(runner, path, "formula.action.exec[1]: argument list too long")


def test_env_variable_longer_than_the_kernel_takes(runner: Runner) -> None:
    path = _action_formula(runner, exec=["/bin/true"], env={"BIG": "x" * MAX_ARG_STRLEN})
    _refused(runner, path, 'formula.action.env["BIG"]: too long')


@pytest.mark.parametrize(
    ("hostname", "says"),
    [
        ("a\0b", "must not contain NUL"),
        ("h" * 200, f"at most {MAX_HOSTNAME}"),
        ("two\nlines", "must not contain whitespace"),
    ],
)
def test_bad_hostname(runner: Runner, hostname: str, says: str) -> None:
    path = _action_formula(runner, exec=["/bin/true"], hostname=hostname)
    _refused(runner, path, "formula.action.hostname", says)


def test_longest_hostname_runs(runner: Runner) -> None:
    name = "h" * MAX_HOSTNAME
    check = f'test "$(hostname)" = {name}'
    path = _action_formula(runner, exec=["/bin/sh", "-c", check], hostname=name)
    res = runner.run("run", str(path), "--executor", "ns")
    assert res.code == 0, res.stderr


# --- E2BIG at exec: JobInvalid on every executor ------------------------------------


def _run_with_small_stack(runner: Runner, path: Path, executor: str) -> Result:
    """``repeatr run`` with a 1 MiB stack rlimit: the kernel then takes 256 KiB of argv."""

    def small_stack() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, 1 << 20))

    proc = subprocess.run(
        [*runner.command("run", str(path), "--executor", executor)],
        capture_output=True,
        text=True,
        timeout=runner.timeout,
        preexec_fn=small_stack,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    "executor",
    [
        "ns",
        "chroot",
        pytest.param("runc", marks=pytest.mark.runtime("runc")),
        pytest.param("crun", marks=pytest.mark.runtime("crun")),
    ],
)
def test_argument_list_too_long_at_exec_is_job_invalid(runner: Runner, executor: str) -> None:
    """Valid for the formula (each argument < 128 KiB, 300 KB in all), too long for this host."""
    path = _action_formula(runner, exec=["/bin/true", *(["x" * 100_000] * 3)])
    res = _run_with_small_stack(runner, path, executor)
    assert res.code == Category.JOB_INVALID, res.stderr[-2000:]
    assert "argument list too long" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr) < 10_000, "the error repeats the arguments"
    assert runner.work_dirs() == []


# --- the original's dialect --------------------------------------------------------


def test_formula_without_commas_has_the_original_formula_id(runner: Runner) -> None:
    """refmt made commas between entries optional; the formula means the same."""
    ware = runner.busybox.ware
    with_commas = (
        '{"formula": {\n\t"inputs": {\n\t\t"/": "' + ware + '",\n\t},\n\t"action": {\n'
        '\t\t"exec": ["/bin/echo", "hello",],\n\t\t"env": {"A": "1", "B": "2"}\n\t}\n}}'
    )
    without = with_commas.replace('"/bin/echo", "hello",', '"/bin/echo" "hello"').replace(
        '"A": "1", "B"', '"A": "1"\n"B"'
    ).replace('},\n\t"action"', '}\n\t"action"')
    assert without.count(",") < with_commas.count(",")
    a = runner.run("formula", "id", str(_write(runner, with_commas, "a.json")))
    b = runner.run("formula", "id", str(_write(runner, without, "b.json")))
    assert a.code == 0 and b.code == 0, b.stderr
    assert a.stdout == b.stdout


# --- outputs repeatr could not read back -------------------------------------------


def test_output_over_a_limit_fails_the_run_at_pack(runner: Runner, tmp_path: Path) -> None:
    """Issue 12.6: a 300-deep output used to pack and save, then fail at unpack."""
    wh = tmp_path / "out-wh"
    wh.mkdir()
    deep = "/".join(["d"] * 300)
    f = runner.formula(
        "/bin/sh",
        "-c",
        f"mkdir -p /task/out/{deep} && echo hi > /task/out/ok",
        outputs={"/task/out": {"packtype": "tar"}},
        save={"/task/out": f"ca+file://{wh}/"},
    )
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == Category.PACK_INVALID, res.stderr[-2000:]
    assert "output /task/out:" in res.stderr
    assert "depth (path components) limit of 256" in res.stderr
    assert "Traceback" not in res.stderr
    saved = [p for p in wh.rglob("*") if p.is_file()]
    assert saved == []  # nothing saved that could not be read back
    assert runner.work_dirs() == []
