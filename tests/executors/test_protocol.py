"""The parent <-> helper protocol: typed messages, one exec lookup, replay by hand."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from repeatr.executors.base import Executor, ExecutorName
from repeatr.executors.helper import MODES, HelperExecutor
from repeatr.executors.lookup import DEFAULT_PATH
from repeatr.executors.protocol import (
    Done,
    Error,
    Exit,
    JobLimits,
    JobNetwork,
    NetworkPolicy,
    OciCommands,
    Spec,
    expect,
    from_wire,
    spec_from_json,
    spec_to_json,
)
from repeatr.executors.wire import decode, encode
from repeatr.model.defaults import DEFAULT_PATH as FORMULA_DEFAULT_PATH
from tests.executors.conftest import Jobs, usable

pytestmark = pytest.mark.anyio


def _spec(**kw: object) -> Spec:
    values: dict[str, object] = {
        "mode": "ns", "root": "/w/root", "mounts": [{"op": "tmpfs", "dest": "/tmp"}],
        "cradle": [], "argv": ["sh", "-c", "true"], "env": [["PATH", "/bin"]],
        "capabilities": ["CAP_KILL"], "network": JobNetwork(policy="bridge", netns="/run/n"),
        "limits": JobLimits(memory=1 << 20, timeout=1.5), "rw": "/w/rw", "cgroup": "repeatr-1-a",
        "seccomp": b"\x00\x01\xff", "outputs": ["/out"], "mountpoints": [],
        "oci": OciCommands(
            name="runc", bundle="/b", config='{"ociVersion": "1.0.2"}', style="create", create=["runc", "create"], start=["runc", "start"],
            run=["runc", "run"], delete=["runc", "delete"], state="/s", log="/l",
            pid_file="/p", cgroup="repeatr-1-a",
        ),
    }
    values.update(kw)
    return Spec(**values)  # type: ignore[arg-type]


def test_spec_round_trips_through_the_wire_and_json() -> None:
    spec = _spec()
    assert decode(encode(spec)[4:]) == spec
    assert spec_from_json(spec_to_json(spec)) == spec
    assert spec_from_json(spec_to_json(spec)).seccomp == b"\x00\x01\xff"


def test_replayed_spec_gets_a_cgroup_of_the_replaying_process(tmp_path: Path) -> None:
    """The saved cgroup names a repeatr that is gone: any gc would reclaim it mid-replay."""
    from repeatr.executors.sandbox import read_spec_file

    saved = tmp_path / "spec.json"
    saved.write_text(spec_to_json(_spec()))  # cgroup and container ID: repeatr-1-a
    spec = read_spec_file(os.fspath(saved))
    assert spec.cgroup.startswith(f"repeatr-{os.getpid()}-")
    assert spec.oci is not None and spec.oci.cgroup == spec.cgroup
    assert '"repeatr-1-a"' not in spec_to_json(spec)


def test_messages_refuse_unknown_and_missing_fields() -> None:
    with pytest.raises(TypeError, match="missing field signal"):
        Exit(code=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unknown field"):
        Done(cmd="done")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="malformed exit"):
        from_wire({"$": "exit", "code": 0})
    with pytest.raises(ValueError, match="not a message"):
        from_wire({"event": "exit", "code": 0, "signal": None})
    with pytest.raises(ValueError, match="expected a spec"):
        expect(Spec, Error(category="EXECUTOR", message="x").to_wire())
    with pytest.raises(AttributeError):
        Exit(code=0, signal=None).code = 1  # type: ignore[misc]


def test_mode_derives_from_the_executor_name() -> None:
    assert set(MODES) == set(ExecutorName)
    for name, mode in MODES.items():
        from repeatr.executors.base import load

        ex = load(name)()
        assert isinstance(ex, HelperExecutor)
        assert ex.mode == mode


def test_one_default_path() -> None:
    assert DEFAULT_PATH == FORMULA_DEFAULT_PATH


async def test_exec_found_in_the_default_path(jobs: Jobs, tmp_path: Path) -> None:
    """With no PATH in the env, every executor looks in the same default PATH
    (runc's, which has the sbin dirs; ns and chroot used not to)."""
    layer = tmp_path / "layer"
    (layer / "usr" / "sbin").mkdir(parents=True)
    tool = layer / "usr" / "sbin" / "only-in-sbin"
    tool.write_text("#!/bin/sh\necho found in sbin\n")
    tool.chmod(0o755)
    out = await jobs.run(jobs.job("only-in-sbin", lowers=(layer,), env=(("HOME", "/"),)))
    assert out.stdout == b"found in sbin\n"
    assert out.result.exit_code == 0


@pytest.mark.parametrize("name", ["ns", "chroot"])
def test_debug_replay_command_runs_the_job(
    name: str, area: object, workdir: Path, tmp_path: Path
) -> None:
    """``--debug`` prints the spec and a command; run by hand, it runs the job again
    (after the run removed its work dir: the writable layers are made afresh)."""
    import anyio

    from tests.rootfs import ScratchArea

    assert isinstance(area, ScratchArea)
    lines: list[str] = []
    ex: Executor = usable(name)
    ex.on_debug = lines.append
    jobs = Jobs(area, workdir, ex)
    job = jobs.job("sh", "-c", 'echo "replayed in $PWD"; echo to-stderr >&2; exit 3')
    out = anyio.run(jobs.run, job)
    assert out.result.exit_code == 3
    [spec_line] = [line for line in lines if line.startswith("sandbox spec: ")]
    [replay] = [line for line in lines if line.startswith("sandbox replay: ")]
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec_line.removeprefix("sandbox spec: "))
    argv = shlex.split(replay.removeprefix("sandbox replay: ").split("  (SPEC.json")[0])
    argv = [os.fspath(spec_file) if a == "SPEC.json" else a for a in argv]
    for entry in workdir.iterdir():  # as a finished run leaves it: gone
        shutil.rmtree(entry)
    res = subprocess.run(argv, cwd=tmp_path, env={}, capture_output=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert res.stdout == b"replayed in /task\n"
    assert b"to-stderr\n" in res.stderr
    assert b"repeatr-sandbox: exit code=3" in res.stderr


def test_replay_of_a_bad_spec_file_says_so(tmp_path: Path) -> None:
    bad = tmp_path / "spec.json"
    bad.write_text('{"$": "exit", "code": 0, "signal": null}')
    argv = usable("ns")
    assert isinstance(argv, HelperExecutor)
    res = subprocess.run(argv.replay_command(os.fspath(bad)), capture_output=True, env={})
    assert res.returncode == 2
    assert b"expected a spec" in res.stderr


def test_one_network_type_from_the_formula_to_the_helper() -> None:
    from repeatr.net.config import NetworkPolicy as NetPolicy
    from repeatr.runner.steps import network_policy as _network_policy

    class Events:
        def log(self, text: str) -> None:
            pass

    assert NetPolicy is NetworkPolicy
    got = _network_policy("bridge", frozenset(NetworkPolicy), "ns", Events())  # type: ignore[arg-type]
    assert got is NetworkPolicy.BRIDGE
    net = JobNetwork(policy=got, netns="/run/netns/x")
    back = decode(encode(net)[4:])
    assert isinstance(back, JobNetwork)
    assert back.policy is NetworkPolicy.BRIDGE
    assert back == net


async def test_bridge_without_its_namespace_is_refused(jobs: Jobs) -> None:
    from repeatr.errors import ExecutorError

    if NetworkPolicy.NONE not in jobs.executor.capabilities().networks:
        pytest.skip("no network namespace of its own")
    with pytest.raises(ExecutorError, match="namespace"):
        await jobs.run(jobs.job("true", network=JobNetwork(policy=NetworkPolicy.BRIDGE)))
