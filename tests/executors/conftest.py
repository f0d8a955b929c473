"""Fixtures for the executor tests: real namespaces, real mounts, a busybox rootfs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Op, Overlay
from repeatr.errors import ExecutorError
from repeatr.executors.base import (
    Executor,
    Isolation,
    JobResult,
    JobSpec,
    available_names,
    load,
)
from repeatr.executors.protocol import JobNetwork, NetworkPolicy
from repeatr.linux import cgroups
from tests.rootfs import (
    STRICT,
    ScratchArea,
    foreign_mount,
    mountinfo,
    netns_list,
    remove_tree,
    session_rootfs,
    tree_digest,
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def area() -> Iterator[ScratchArea]:
    if os.geteuid() != 0:
        pytest.fail("executor tests need root (real namespaces and mounts)")
    with session_rootfs() as a:
        yield a


@pytest.fixture(scope="session")
def rootfs_digest(area: ScratchArea) -> str:
    return tree_digest(area.rootfs)


@pytest.fixture(autouse=True)
def host_unchanged(area: ScratchArea, rootfs_digest: str) -> Iterator[None]:
    """The host's mount table, network namespaces and the lower rootfs are as before."""
    before = mountinfo()
    netns = netns_list()
    runtime_dirs = [d for d in RUNTIME_DEFAULT_DIRS if os.path.exists(d)]
    yield
    assert our_cgroups() == [], "cgroup dirs left behind"
    made = [d for d in RUNTIME_DEFAULT_DIRS if os.path.exists(d) and d not in runtime_dirs]
    # Another session's podman (a benchmark) makes /run/runc meanwhile: only CI is strict.
    assert not (made and STRICT), f"a runtime created its default state dir {made} (we pass --root)"
    after = mountinfo()
    if len(after) != len(before):
        new = [line for line in after if line not in before]
        ours = [line for line in new if not foreign_mount(line, area)]
        assert not ours, f"mounts leaked into the host: {ours}"
    assert netns_list() == netns
    assert tree_digest(area.rootfs) == rootfs_digest, "the lower rootfs changed"


@pytest.fixture
def workdir(area: ScratchArea) -> Iterator[Path]:
    path = area.new_workdir()
    yield path
    remove_tree(path)


RUNTIME_DEFAULT_DIRS = ("/run/runc", "/run/crun", "/run/runsc", "/var/run/runsc")


def children(pid: int) -> list[int]:
    """The child pids of process ``pid`` (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def our_cgroups() -> list[str]:
    """``repeatr-<pid>-*`` cgroup dirs of runs started by this process."""
    mine = f"{cgroups.PREFIX}{os.getpid()}-"
    return [p for p in cgroups.ours() if os.path.basename(p).startswith(mine)]


def usable(name: str) -> Executor:
    """The executor ``name`` if it passes preflight; skipped if not, but failed in CI."""
    ex = load(name)()
    try:
        ex.preflight()
    except ExecutorError as e:
        if os.environ.get("CI"):
            pytest.fail(f"executor {name} is unavailable in CI: {e}")
        pytest.skip(f"executor {name} is unavailable: {e}")
    return ex


@pytest.fixture(
    params=[pytest.param(str(n), marks=pytest.mark.runtime(str(n))) for n in available_names()]
)
def executor(request: pytest.FixtureRequest) -> Executor:
    return usable(request.param)


DEFAULT_ENV = (
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/home/reuser"),
    ("USER", "reuser"),
)


@dataclass
class Outcome:
    result: JobResult
    stdout: bytes
    stderr: bytes
    lines: list[tuple[str, bytes]] = field(default_factory=list)


class Jobs:
    """Builds jobs over the busybox rootfs (one overlay, /proc, /dev, the cradle)."""

    def __init__(self, area: ScratchArea, workdir: Path, executor: Executor) -> None:
        self.area = area
        self.workdir = workdir
        self.executor = executor

    def job(
        self,
        *argv: str,
        lowers: tuple[Path, ...] = (),
        extra_mounts: tuple[Op, ...] = (),
        cradle: bool = True,
        **kw: Any,
    ) -> JobSpec:
        uid = kw.get("uid", 1000)
        gid = kw.get("gid", 1000)
        home = "/root" if uid == 0 else "/home/reuser"
        kw.setdefault("cwd", "/task" if cradle else "/")
        caps = self.executor.capabilities()
        none = NetworkPolicy.NONE
        kw.setdefault("network", JobNetwork(
            policy=none if none in caps.networks else NetworkPolicy.HOST
        ))
        layers = tuple(os.fspath(p) for p in (*lowers, self.area.rootfs))
        return JobSpec(
            argv=argv,
            env=kw.pop("env", DEFAULT_ENV),
            workdir=self.workdir,
            mounts=(
                Overlay(
                    layers, "/", os.fspath(self.workdir / "upper"), os.fspath(self.workdir / "work")
                ),
                *system_mounts(),
                *extra_mounts,
            ),
            cradle=cradle_steps(cwd=kw["cwd"], home=home, uid=uid, gid=gid) if cradle else (),
            **kw,
        )

    def on_host(self, marker: str) -> str | None:
        """What a run of a job whose command line holds ``marker`` shows on the host:
        the marker (the job's processes are the host's), a VM's dir (qemu and
        virtiofsd name it), or None (gVisor: nothing of the job's)."""
        caps = self.executor.capabilities()
        if caps.host_processes:
            return marker
        if Isolation.KERNEL in caps.isolates:
            return os.fspath(self.workdir / "vm")
        return None

    async def run(self, job: JobSpec) -> Outcome:
        lines: list[tuple[str, bytes]] = []

        async def on_output(stream: str, line: bytes) -> None:
            lines.append((stream, line))

        result = await self.executor.run(job, on_output=on_output)
        return Outcome(
            result,
            b"".join(b for s, b in lines if s == "stdout"),
            b"".join(b for s, b in lines if s == "stderr"),
            lines,
        )

    async def sh(self, script: str, **kw: Any) -> Outcome:
        return await self.run(self.job("sh", "-c", script, **kw))


@pytest.fixture
def jobs(area: ScratchArea, workdir: Path, executor: Executor) -> Iterator[Jobs]:
    yield Jobs(area, workdir, executor)
    assert not (workdir / "oci").exists(), "the OCI bundle or runtime state was left behind"
