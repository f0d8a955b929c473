"""``repeatr check``: the same formula run N times; are the outputs the same?"""

from __future__ import annotations

import json

import pytest

from repeatr.check import EXIT_NOT_DETERMINISTIC
from repeatr.cli import check_cmds

from .conftest import Stress, assert_host_clean, host_mounts

pytestmark = [pytest.mark.root]


def report(stdout: str) -> dict[str, object]:
    events = [json.loads(line) for line in stdout.splitlines()]
    return dict(next(e for e in events if e["event"] == "result"))


def test_exit_code_constant_agrees() -> None:
    assert check_cmds.EXIT_NOT_DETERMINISTIC == EXIT_NOT_DETERMINISTIC


def test_deterministic_formula(stress: Stress) -> None:
    mounts_before = host_mounts(stress.area)
    wh = stress.dir / "publish"
    wh.mkdir()
    f = stress.formula(
        "mkdir -p /task/out/sub && echo same > /task/out/sub/f && ln -s f /task/out/sub/l",
        name="same.json",
        outputs=("/task/out",),
    )
    f.write_text(f.read_text().replace(stress.area.url, f"ca+file://{wh}/").replace(
        f'"fetchUrls": {{"/": ["ca+file://{wh}/"]}}', f'"fetchUrls": {{"/": ["{stress.area.url}"]}}'
    ))
    res = stress.run("check", str(f), "-n", "3", "-e", "ns", "--format", "json")
    assert res.code == 0, res.stderr
    rep = report(res.stdout)
    assert rep["deterministic"] is True and rep["exitCodes"] == [0, 0, 0]
    assert len({r["/task/out"] for r in rep["results"]}) == 1  # type: ignore[union-attr]
    assert list(wh.iterdir()) == []  # a check never saves to the formula's saveUrls
    text = stress.run("check", str(f), "-e", "chroot")
    assert text.code == 0 and "deterministic" in text.stdout and "NOT" not in text.stdout
    assert_host_clean(stress, mounts_before)


def test_random_content_is_found(stress: Stress) -> None:
    f = stress.formula(
        "mkdir -p /task/out && echo fixed > /task/out/same && head -c 32 /dev/urandom > /task/out/noise",
        name="rand.json",
        outputs=("/task/out",),
    )
    res = stress.run("check", str(f), "-e", "ns", "--format", "json")
    assert res.code == EXIT_NOT_DETERMINISTIC, res.stderr
    rep = report(res.stdout)
    assert rep["deterministic"] is False and rep["differingOutputs"] == ["/task/out"]
    diffs = rep["differences"]
    assert [(d["path"], d["aspect"]) for d in diffs] == [("noise", "content")]  # type: ignore[union-attr]
    text = stress.run("check", str(f), "-e", "ns")
    assert text.code == EXIT_NOT_DETERMINISTIC
    assert "/task/out/noise: content differs" in text.stdout and "NOT deterministic" in text.stdout
    assert stress.work_dirs() == []


def test_a_single_file_output_is_compared(stress: Stress) -> None:
    # The output is one file (a single-file ware): its content is compared too.
    f = stress.formula(
        "mkdir -p /task && head -c 32 /dev/urandom > /task/noise.bin",
        name="file.json",
        outputs=("/task/noise.bin",),
    )
    res = stress.run("check", str(f), "-e", "ns", "--format", "json")
    assert res.code == EXIT_NOT_DETERMINISTIC, res.stderr
    rep = report(res.stdout)
    assert rep["differingOutputs"] == ["/task/noise.bin"]
    assert [(d["path"], d["aspect"]) for d in rep["differences"]] == [(".", "content")]  # type: ignore[union-attr]


def test_a_mode_difference_is_named(stress: Stress) -> None:
    f = stress.formula(
        "mkdir -p /task/out && echo x > /task/out/f && echo y > /task/out/g"
        " && chmod $(printf %o $((256 + RANDOM % 256))) /task/out/f",
        name="mode.json",
        outputs=("/task/out",),
    )
    res = stress.run("check", str(f), "-n", "3", "-e", "ns", "--format", "json")
    assert res.code == EXIT_NOT_DETERMINISTIC, res.stderr
    diffs = report(res.stdout)["differences"]
    assert diffs and all((d["path"], d["aspect"]) == ("f", "mode") for d in diffs), diffs  # type: ignore[union-attr]
    assert all(d["first"] != d["other"] for d in diffs)  # type: ignore[union-attr]


def test_failing_job_and_too_few_runs(stress: Stress) -> None:
    f = stress.formula("exit 3", name="fail.json")
    res = stress.run("check", str(f), "-e", "ns", "--format", "json")
    assert res.code == 20 and report(res.stdout)["exitCodes"] == [3, 3]
    assert stress.run("check", str(f), "-n", "1").code == 1
