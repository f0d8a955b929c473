"""Issue #13 (and #11 finding 6): runs behave as the original's did, on every executor."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Runner

pytestmark = pytest.mark.root

ALL = [pytest.param(n, marks=pytest.mark.runtime(n)) for n in ("ns", "chroot", "runc", "crun", "gvisor")]


def _meta(path: Path) -> tuple[int, int, int, int]:
    st = os.lstat(path)
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns)


@pytest.mark.parametrize("executor", ALL)
def test_cradle_leaves_a_host_tmp_alone(runner: Runner, executor: str, tmp_path: Path) -> None:
    """#11 finding 6: ``"/tmp": "mount:rw:DIR"``; the cradle's 01777 never reaches DIR."""
    host = tmp_path / "hosttmp"
    host.mkdir(mode=0o700)
    os.utime(host, ns=(1_500_000_000_000_000_000, 1_500_000_000_000_000_000))
    before = _meta(host)
    f = runner.formula(
        "/bin/sh", "-c", "stat -c %a /tmp", inputs={"/tmp": f"mount:rw:{host}"},
        userinfo={"uid": 0, "gid": 0},
    )
    res = runner.run("run", str(f), "--executor", executor)
    assert res.code == 0, res.stderr
    assert "out| 700\n" in res.stderr
    assert _meta(host) == before


@pytest.mark.parametrize("executor", ALL)
def test_input_under_cwd_then_mkdir(runner: Runner, executor: str) -> None:
    """#13.1: /task/src an input, so /task exists before the cradle: uid 1000 still owns it."""
    f = runner.formula(
        "/bin/sh", "-c", "mkdir out && echo made > out/f && stat -c '%u:%g %a' /task",
        inputs={"/task/src": runner.busybox.ware},
        outputs={"/task/out": {"packtype": "tar"}},
    )
    res = runner.run("run", str(f), "--executor", executor)
    assert res.code == 0, res.stderr
    assert "out| 1000:1000 755\n" in res.stderr
    assert res.record()["results"]["/task/out"] != "tar:-"


def _repeatr(runner: Runner, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REPEATR_CACHE": os.fspath(runner.state)}
    return subprocess.run(
        [sys.executable, "-m", "repeatr", *args], input=stdin, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_formula_from_a_pipe_or_after_dashdash(runner: Runner) -> None:
    """#13.3: `cat f | repeatr run /dev/stdin`, `repeatr run <(...)`, `repeatr run -- f`."""
    f = runner.formula("/bin/echo", "hello world!")
    text = f.read_text()
    dashdash = _repeatr(runner, "run", "-e", "ns", "--no-memo", "--", str(f))
    assert dashdash.returncode == 0, dashdash.stderr
    assert "out| hello world!" in dashdash.stderr
    fid = json.loads(dashdash.stdout)["formulaID"]
    piped = _repeatr(runner, "run", "-e", "ns", "--no-memo", "/dev/stdin", stdin=text)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["formulaID"] == fid and "out| hello world!" in piped.stderr
    # A memo hit from a pipe: the formula is read once, by the slow path.
    again = _repeatr(runner, "run", "-e", "ns", "/dev/stdin", stdin=text)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["formulaID"] == fid
    script = f'{shlex.join([sys.executable, "-m", "repeatr", "run", "-e", "ns", "--no-memo"])} <(cat {shlex.quote(str(f))})'
    substituted = subprocess.run(
        ["bash", "-c", script], env={**os.environ, "REPEATR_CACHE": os.fspath(runner.state)},
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert substituted.returncode == 0, substituted.stderr
    assert json.loads(substituted.stdout)["formulaID"] == fid


def test_host_mount_runs_are_never_replayed(runner: Runner, tmp_path: Path) -> None:
    """#13.4: the host directory changes between runs; the second run must see it."""
    host = tmp_path / "src"
    host.mkdir()
    (host / "v").write_text("one\n")
    f = runner.formula("/bin/cat", "/src/v", inputs={"/src": f"mount:ro:{host}"})
    first = runner.run("run", str(f), "--executor", "ns")
    assert first.code == 0, first.stderr
    assert "out| one" in first.stderr and "not memoized: /src" in first.stderr
    (host / "v").write_text("two\n")
    second = runner.run("run", str(f), "--executor", "ns")
    assert second.code == 0, second.stderr
    assert "out| two" in second.stderr
    assert second.record()["guid"] != first.record()["guid"]


@pytest.mark.parametrize("executor", ALL)
def test_hostnames_as_the_original(runner: Runner, executor: str) -> None:
    """#13.8: the record names the host; the job's default hostname is the run's guid."""
    f = runner.formula("/bin/hostname")
    res = runner.run("run", str(f), "--executor", executor, "--no-memo")
    assert res.code == 0, res.stderr
    record = res.record()
    assert record["hostname"] == os.uname().nodename
    assert list(record)[:6] == ["guid", "time", "formulaID", "exitCode", "results", "hostname"]
    assert res.stdout.startswith('{\n    "guid": ')
    seen = res.stderr.split("out| ", 1)[1].split("\n", 1)[0]
    # chroot has no UTS namespace: the job sees the host's name.
    assert seen == (os.uname().nodename if executor == "chroot" else record["guid"])


KEEP = {"uid": "keep", "gid": "keep", "mtime": "keep", "sticky": "keep"}


@pytest.mark.parametrize("executor", ALL)
def test_packing_root_gives_the_input_back(runner: Runner, executor: str, tmp_path: Path) -> None:
    """#13.2: what repeatr mounted (/proc, /dev, a runtime's /sys, a host bind and
    the mount points it made for them) is not part of an output of ``/``."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host data\n")
    f = runner.formula(
        "/bin/true", cradle="disable", userinfo={"uid": 0, "gid": 0},
        inputs={"/wow/deep": f"mount:ro:{host}"},
        outputs={"/": {"packtype": "tar", "filters": KEEP}},
    )
    res = runner.run("run", str(f), "--executor", executor)
    assert res.code == 0, res.stderr
    assert res.record()["results"]["/"] == runner.busybox.ware


@pytest.mark.parametrize("executor", ALL)
def test_output_at_a_host_mount_packs_it(runner: Runner, executor: str, tmp_path: Path) -> None:
    """An output that is a ``mount:`` input packs the host directory, what the job wrote included."""
    from repeatr.fileset.pack import pack_dir
    from repeatr.model.filters import PACK_FLATTEN

    host = tmp_path / "host"
    host.mkdir()
    (host / "given").write_text("host data\n")
    f = runner.formula(
        "/bin/sh", "-c", "echo made > /out/made", userinfo={"uid": 0, "gid": 0},
        inputs={"/out": f"mount:rw:{host}"}, outputs={"/out": {"packtype": "tar"}, "/": {"packtype": "tar"}},
    )
    res = runner.run("run", str(f), "--executor", executor)
    assert res.code == 0, res.stderr
    assert (host / "made").read_text() == "made\n"
    assert res.record()["results"]["/out"] == str(pack_dir(host, None, filters=PACK_FLATTEN))
