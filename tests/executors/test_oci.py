"""OCI executors only: the bundle we write, a prepared netns by path, teardown."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.executors.base import JobSpec
from repeatr.executors.oci import config
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from tests.executors.conftest import Jobs, usable
from tests.rootfs import named_netns

pytestmark = [pytest.mark.root, pytest.mark.anyio]

OCI = [pytest.param(n, marks=pytest.mark.runtime(n)) for n in ("runc", "crun", "gvisor")]


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> object:
    return usable(request.param)


@pytest.fixture
def netns() -> Iterator[str]:
    """A named netns (the rpr prefix: the host check treats it as not ours) with a veth pair in it."""
    name = f"rprtest-{uuid.uuid4().hex[:8]}"
    with named_netns(name) as path:
        subprocess.run(["ip", "-n", name, "link", "add", "dummy7", "type", "veth",
                        "peer", "name", "dummy7p"], check=True)
        subprocess.run(["ip", "-n", name, "addr", "add", "10.77.0.2/24", "dev", "dummy7"],
                       check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "dummy7", "up"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield str(path)


@pytest.mark.parametrize("executor", OCI, indirect=True)
async def test_prepared_netns_by_path(jobs: Jobs, netns: str) -> None:
    out = await jobs.sh("cat /proc/net/dev", network=JobNetwork(policy=NetworkPolicy.BRIDGE, netns=netns))
    assert out.result.exit_code == 0, out.stderr
    assert b"dummy7" in out.stdout


def _job(tmp_path: Path, **kw: object) -> JobSpec:
    return JobSpec(argv=("sh", "-c", "x"), env=(("B", "2"), ("A", "1")), workdir=tmp_path,
                   mounts=(), **kw)  # type: ignore[arg-type]


def test_config_is_deterministic_and_keeps_env_order(tmp_path: Path) -> None:
    job = _job(tmp_path, capabilities=frozenset({"CAP_KILL", "ALL"}))
    a = json.dumps(config(job, "/repeatr-1-x"))
    assert a == json.dumps(config(job, "/repeatr-1-x"))
    cfg = config(job, "/repeatr-1-x")
    assert cfg["process"]["env"] == ["B=2", "A=1"]
    caps = cfg["process"]["capabilities"]
    assert caps["bounding"] == caps["ambient"] == caps["effective"]
    assert "CAP_SYS_RESOURCE" not in caps["bounding"] or _host_has_sys_resource()
    assert {"type": "network"} in cfg["linux"]["namespaces"]
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    limits = {r["type"]: r for r in cfg["process"]["rlimits"]}
    assert limits["RLIMIT_NOFILE"]["hard"] <= _hard_nofile()
    assert limits["RLIMIT_NOFILE"]["soft"] == 1024
    assert limits["RLIMIT_CORE"]["soft"] == 0
    # Every limit is ours: one left out would be the invoker's, through the runtime.
    assert len(limits) == 16


def test_config_network_host_and_path(tmp_path: Path) -> None:
    host = config(_job(tmp_path, network=JobNetwork(policy=NetworkPolicy.HOST)), "/c")
    assert all(ns["type"] != "network" for ns in host["linux"]["namespaces"])
    by_path = config(_job(tmp_path, network=JobNetwork(policy=NetworkPolicy.BRIDGE, netns="/run/netns/x")), "/c")
    assert {"type": "network", "path": "/run/netns/x"} in by_path["linux"]["namespaces"]
    # Unprivileged ping in the job's own namespace; never a sysctl of the host's.
    assert "sysctl" not in host["linux"]
    none = config(_job(tmp_path, network=JobNetwork(policy=NetworkPolicy.NONE)), "/c")
    for cfg in (by_path, none):
        assert cfg["linux"]["sysctl"] == {"net.ipv4.ping_group_range": "0 2147483647"}


def _hard_nofile() -> int:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _host_has_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd"))
    return bool(bnd >> 24 & 1)


@pytest.mark.parametrize("executor", OCI, indirect=True)
async def test_runtime_state_is_removed(jobs: Jobs) -> None:
    out = await jobs.sh("echo hi")
    assert out.stdout == b"hi\n"
    assert not (jobs.workdir / "oci").exists()
