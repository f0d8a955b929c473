"""The attack lab: one compiled attack tool, one rootfs ware, real ``repeatr run``s.

Once per session: a tmpfs (mounted *without* nodev/nosuid, as a real cache
dir on a disk is), ``attack.c`` compiled there with ``gcc -static``, a busybox
rootfs with the tool as ``/bin/attack`` (and a setuid-root copy,
``/bin/attack-suid``) packed into a ``ca+file`` warehouse, a second ware of
device nodes, and one cache that every run shares (each ware is unpacked
once). Each attack is one ``repeatr run --no-memo`` of the installed CLI,
so fetching, overlays, the cradle, mounts and the executor run as a user's
run would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from repeatr.cache.layout import Layout
from repeatr.errors import ExecutorError
from repeatr.executors.base import load
from repeatr.fileset.pack import hash_dir_exact, pack_dir
from repeatr.linux import libc
from repeatr.model.filters import Filters
from repeatr.model.wareid import WareID
from repeatr.warehouse import warehouse_for
from tests.rootfs import (
    MKROOTFS,
    STRICT,
    ScratchArea,
    foreign_mount,
    mountinfo,
    processes_with,
)

HERE = Path(__file__).resolve().parent
ATTACK_C = HERE / "attack.c"
#: The console script next to this interpreter: how a user runs repeatr (its
#: sys.path[0] is its own bin dir, never the caller's cwd).
REPEATR = Path(sys.executable).parent / "repeatr"
RUN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Lab:
    base: Path  # the session's tmpfs
    tool: Path  # the compiled attack tool (on the host)
    warehouse: str  # ca+file URL holding every ware below
    rootfs: str  # ware ID: busybox + /bin/attack + /bin/attack-suid
    devices: str  # ware ID: device nodes (see device_nodes)
    device_names: tuple[str, ...]
    cache: Path  # the --cache every run shares

    def new_dir(self, prefix: str) -> Path:
        path = self.base / "scratch" / f"{prefix}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def shelf(self, ware: str) -> Path:
        """Where the cache unpacked ``ware`` (a lower layer of every run that uses it)."""
        return Layout(self.cache).shelf(WareID.parse(ware))


def compile_tool(out: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("the attack suite needs gcc and libc6-dev (scripts/setup installs them)")
    subprocess.run(
        [gcc, "-static", "-O1", "-Wall", "-Werror", "-o", os.fspath(out), os.fspath(ATTACK_C)],
        check=True,
    )


def device_nodes(tree: Path) -> tuple[str, ...]:
    """Nodes a hostile ware could ship: the host's root disk (block), /dev/kvm's
    10:232 when the host has it, /dev/mem's 1:1; all mode 0666."""
    root_dev = os.stat("/").st_dev
    block = (os.major(root_dev), os.minor(root_dev))
    if block[0] == 0:  # "/" is not on a block device: the first loop device instead
        block = (7, 0)
    nodes: list[tuple[str, int, int, int]] = [("disk", stat.S_IFBLK, *block)]
    if os.path.exists("/dev/kvm"):
        nodes.append(("kvm", stat.S_IFCHR, 10, 232))
    nodes.append(("mem", stat.S_IFCHR, 1, 1))
    tree.mkdir(mode=0o755)
    for name, kind, major, minor in nodes:
        os.mknod(tree / name, kind | 0o666, os.makedev(major, minor))
        os.chmod(tree / name, 0o666)
    return tuple(n for n, *_ in nodes)


def save(url: str, tree: Path) -> str:
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(tree, session.file, filters=Filters())
        session.commit(ware)
    return str(ware)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.fail("the attack suite needs root (real namespaces and mounts)")
    base = Path(tempfile.mkdtemp(prefix="repeatr-attack-"))
    # No nodev/nosuid: the cache and the shelves must be where a ware's device
    # nodes and setuid bits would work, as on a real disk.
    libc.mount("tmpfs", base, "tmpfs", 0, "size=512m,mode=755")
    try:
        tool = base / "attack"
        compile_tool(tool)
        rootfs = base / "rootfs"
        subprocess.run([sys.executable, os.fspath(MKROOTFS), os.fspath(rootfs)], check=True)
        shutil.copy(tool, rootfs / "bin" / "attack")
        os.chmod(rootfs / "bin" / "attack", 0o755)
        shutil.copy(tool, rootfs / "bin" / "attack-suid")
        os.chmod(rootfs / "bin" / "attack-suid", 0o4755)
        wh = base / "warehouse"
        wh.mkdir()
        url = f"ca+file://{wh}/"
        devices = base / "devices"
        names = device_nodes(devices)
        cache = base / "cache"
        cache.mkdir()
        yield Lab(base, tool, url, save(url, rootfs), save(url, devices), names, cache)
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


@pytest.fixture(autouse=True)
def no_mounts_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """No attack leaves a mount in the host's namespace (other sessions' tmpfs aside)."""
    if "lab" not in request.fixturenames:
        yield
        return
    lab: Lab = request.getfixturevalue("lab")
    area = ScratchArea(lab.base, lab.base)
    before = mountinfo()
    yield
    new = [line for line in mountinfo() if line not in before]
    assert [line for line in new if not _foreign(line, area)] == [], "mounts left on the host"


def _foreign(line: str, area: ScratchArea) -> bool:
    """Another session's mount: theirs per ``foreign_mount``, or (on a shared dev
    machine) any named network namespace: bridged runs of other sessions make
    ``repeatr-*`` ones, and no attack here makes any."""
    return foreign_mount(line, area) or (not STRICT and " - nsfs " in line)


# --- runs -----------------------------------------------------------------------


@dataclass
class Run:
    """One ``repeatr run``: its exit code, stdout (the record), stderr (log + job output)."""

    code: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    def job_lines(self) -> list[str]:
        """What the job printed (the CLI prefixes it with 'out| ' / 'err| ')."""
        return [
            line[5:] for line in self.stderr.splitlines() if line.startswith(("out| ", "err| "))
        ]

    def result(self, sub: str) -> tuple[str, str] | None:
        """The attack tool's result line for subcommand ``sub``: (BLOCKED|SUCCEEDED, detail)."""
        for line in self.job_lines():
            word, _, rest = line.partition(" ")
            name, _, detail = rest.partition(" ")
            if word in ("BLOCKED", "SUCCEEDED") and name == sub:
                return word, detail
        return None

    def record(self) -> dict[str, Any]:
        return dict(json.loads(self.stdout))

    def describe(self) -> str:
        return f"exit {self.code}{' (timed out)' if self.timed_out else ''}\n{self.stderr[-3000:]}"


@dataclass
class Attacker:
    """Writes formulas for one executor and runs them with the real CLI."""

    lab: Lab
    executor: str
    dir: Path  # host scratch dir of this test (on the lab's tmpfs)
    cleanups: list[Any] = field(default_factory=list)

    def formula(
        self,
        argv: list[str],
        *,
        uid: int = 1000,
        policy: str | None = None,
        inputs: dict[str, str] | None = None,
        outputs: dict[str, Any] | None = None,
        name: str = "formula.json",
        **action: Any,
    ) -> Path:
        all_inputs = {"/": self.lab.rootfs, **(inputs or {})}
        act: dict[str, Any] = {"exec": argv, "userinfo": {"uid": uid, "gid": uid}, **action}
        if policy:
            act["policy"] = policy
        doc = {
            "formula": {"inputs": all_inputs, "action": act, "outputs": outputs or {}},
            "context": {
                "fetchUrls": {
                    p: [self.lab.warehouse] for p, w in all_inputs.items()
                    if not w.startswith("mount:")
                },
            },
        }
        path = self.dir / name
        path.write_text(json.dumps(doc))
        return path

    def command(self, formula: Path) -> list[str]:
        if not REPEATR.exists():
            pytest.fail(f"{REPEATR} is missing: install repeatr into this environment")
        return [
            os.fspath(REPEATR), "run", os.fspath(formula), "--no-memo",
            "--executor", self.executor, "--cache", os.fspath(self.lab.cache),
        ]

    def run(
        self, argv: list[str], *, host_cwd: Path | None = None, timeout: float = RUN_TIMEOUT,
        invoker: Callable[[], None] | None = None, pass_fds: tuple[int, ...] = (),
        **formula: Any,
    ) -> Run:
        """Run a formula; ``host_cwd`` is where ``repeatr run`` itself runs, ``invoker``
        what its invoker does to it before the exec (``preexec_fn``: signal state...),
        ``pass_fds`` the descriptors it leaves open for it (the others are closed)."""
        return self.run_formula(
            self.formula(argv, **formula), host_cwd=host_cwd, timeout=timeout, invoker=invoker,
            pass_fds=pass_fds,
        )

    def run_formula(
        self, path: Path, *, host_cwd: Path | None = None, timeout: float = RUN_TIMEOUT,
        invoker: Callable[[], None] | None = None, pass_fds: tuple[int, ...] = (),
    ) -> Run:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            self.command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=host_cwd or self.dir, start_new_session=True, preexec_fn=invoker,
            pass_fds=pass_fds,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
            return Run(proc.returncode, out, err, time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return Run(proc.returncode, out, err, time.monotonic() - t0, timed_out=True)

    def start(self, path: Path) -> subprocess.Popen[str]:
        """A background ``repeatr run`` (killed at the end of the test if still there)."""
        proc = subprocess.Popen(
            self.command(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=self.dir, start_new_session=True,
        )
        self.cleanups.append(lambda: _reap(proc))
        return proc

    def host_process(self, *, uid: int, secret: str) -> subprocess.Popen[bytes]:
        """A disposable host process (``sleep``) of ``uid`` with ``secret`` in its environment."""
        proc = subprocess.Popen(
            ["/bin/sleep", "600"],
            env={"REPEATR_ATTACK_SECRET": secret, "PATH": os.defpath},
            user=uid, group=uid, extra_groups=[], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.cleanups.append(lambda: _reap(proc))
        return proc

    def close(self) -> None:
        while self.cleanups:
            self.cleanups.pop()()


def _reap(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate() if proc.stdout is not None else proc.wait()


def kill_marked(marker: str) -> list[int]:
    """SIGKILL the processes whose command line has ``marker`` (ones our attacks started)."""
    pids = processes_with(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def usable_executor(name: str) -> None:
    """Skip (fail in CI) when executor ``name`` cannot run on this host."""
    try:
        load(name)().preflight()
    except ExecutorError as e:
        if os.environ.get("CI"):
            pytest.fail(f"executor {name} is unavailable in CI: {e}")
        pytest.skip(f"executor {name} is unavailable: {e}")


def tree_state(path: Path) -> str:
    """An exact digest of a tree (every byte, mode, owner, mtime, xattr)."""
    return str(hash_dir_exact(path))
