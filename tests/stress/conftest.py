"""Stress and fault fixtures: a big tmpfs with a busybox rootfs, a big ware, the real CLI.

Everything heavy lives on one tmpfs this session mounts (and unmounts):
the warehouse (busybox, a ~130 MB "big" ware of ~4,000 files so that
fetch+unpack and pack take long enough to be interrupted at random
moments, a few small data wares), and every test's state dir.

``Stress`` runs ``repeatr`` as a subprocess, exactly as a user would;
``started`` kills and reaps a background run whatever happens, so a failing
test never leaves one behind. ``assert_host_clean`` is the common
post-condition: no work dirs, no cache temp dirs, no new mounts, no
sandbox helper or job process left, and ``repeatr cache verify`` passes.

Scale: ``REPEATR_STRESS_SCALE`` (default 1; ``scripts/stress --soak`` sets
more) multiplies the number of kill moments and concurrent runs;
``REPEATR_STRESS_SEED`` fixes the random moments (printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from repeatr.executors.base import available_names, load
from repeatr.executors.forkserver import PROCESS_NAME
from repeatr.fileset.pack import pack_dir
from repeatr.linux import libc
from repeatr.model.filters import Filters
from repeatr.warehouse import warehouse_for
from tests.clirun import StateRunner
from tests.rootfs import MKROOTFS, STRICT, iproute2_netns_dir, mountinfo, processes_with

SCALE = max(1, int(os.environ.get("REPEATR_STRESS_SCALE", "1")))
SEED = int(os.environ.get("REPEATR_STRESS_SEED", str(int(time.time()))))
SANDBOX = "repeatr.executors.forkserver"  # the server and its forked helpers
#: The data in the big ware: 40 dirs x 100 files of 16 KiB, and two 32 MiB files.
BIG_DIRS, BIG_FILES, BIG_FILE_SIZE, BIG_LARGE = 40, 100, 16 << 10, 32 << 20


def usable_executors() -> list[str]:
    """ns and chroot, plus every other executor whose preflight passes here (not gvisor
    or vm: slow)."""
    names = []
    for name in available_names():
        if name in ("gvisor", "vm"):
            continue
        try:
            load(name)().preflight()
        except Exception:  # any failure means "not on this host"
            if name in ("ns", "chroot"):
                raise
            continue
        names.append(str(name))
    return names


@dataclass(frozen=True)
class Area:
    base: Path  # tmpfs mount point
    warehouse: Path
    busybox: str  # ware ID
    big: str  # busybox + /data (big)
    data: tuple[str, ...]  # small distinct data wares

    @property
    def url(self) -> str:
        return f"ca+file://{self.warehouse}/"


def _pack(tree: Path, url: str) -> str:
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(tree, session.file, filters=Filters())
        session.commit(ware)
    return str(ware)


@pytest.fixture(scope="session")
def area() -> Iterator[Area]:
    if os.geteuid() != 0:
        pytest.fail("stress tests need root (real namespaces and mounts)")
    base = Path(tempfile.mkdtemp(prefix="repeatr-stress-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=3g,mode=755")
    try:
        rootfs = base / "rootfs"
        subprocess.run([sys.executable, os.fspath(MKROOTFS), os.fspath(rootfs)], check=True)
        wh = base / "warehouse"
        wh.mkdir()
        url = f"ca+file://{wh}/"
        busybox = _pack(rootfs, url)
        rnd = random.Random(1)  # the same big ware every session
        data = rootfs / "data"
        for d in range(BIG_DIRS):
            (data / f"d{d}").mkdir(parents=True)
            for i in range(BIG_FILES):
                (data / f"d{d}" / f"f{i}").write_bytes(rnd.randbytes(BIG_FILE_SIZE))
        for i in range(2):
            (data / f"large{i}").write_bytes(rnd.randbytes(BIG_LARGE))
        for d, _, files in os.walk(rootfs):
            for name in [".", *files]:
                os.utime(os.path.join(d, name), (1262304000, 1262304000))
        big = _pack(rootfs, url)
        subprocess.run(["rm", "-rf", os.fspath(rootfs)], check=True)
        small = []
        for n in range(4):
            tree = base / f"data{n}"
            tree.mkdir()
            (tree / "which").write_text(f"data ware {n}\n")
            small.append(_pack(tree, url))
            subprocess.run(["rm", "-rf", os.fspath(tree)], check=True)
        yield Area(base, wh, busybox, big, tuple(small))
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


@dataclass
class Lines:
    """A background run's stderr lines, each with the monotonic time it arrived."""

    seen: list[tuple[float, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    stdout: list[str] = field(default_factory=list)  # filled once the run ends

    def wait_for(self, needle: str, timeout: float = 60.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in list(self.seen):
                if needle in line:
                    return t
            if self.done.is_set():
                raise AssertionError(f"the run ended before {needle!r}:\n{self.text()}")
            time.sleep(0.002)
        raise AssertionError(f"timed out waiting for {needle!r}:\n{self.text()}")

    def text(self) -> str:
        return "".join(line for _, line in self.seen)


class Stress(StateRunner):
    """A state dir (cache + work dirs) on the area's tmpfs, and the real CLI on it."""

    timeout = 180

    def __init__(self, area: Area, tmp: Path) -> None:
        super().__init__(area.base / "states" / uuid.uuid4().hex[:12], tmp)
        self.state.mkdir(parents=True)
        self.area = area

    def formula(
        self,
        script: str,
        *,
        name: str,
        root: str | None = None,
        inputs: dict[str, str] | None = None,
        outputs: tuple[str, ...] = (),
        save: bool = True,
        network: str | None = None,
        **action: Any,
    ) -> Path:
        """A formula running ``/bin/sh -c script``; ``network`` is set only when given."""
        all_inputs = {"/": root or self.area.busybox, **(inputs or {})}
        if network is not None:
            action["network"] = network
        doc = {
            "formula": {
                "inputs": all_inputs,
                "action": {"exec": ["/bin/sh", "-c", script], **action},
                "outputs": {path: {"packtype": "tar"} for path in outputs},
            },
            "context": {
                "fetchUrls": {p: [self.area.url] for p, w in all_inputs.items() if not w.startswith("mount:")},
                "saveUrls": {path: self.area.url for path in outputs} if save else {},
            },
        }
        path = self.dir / name
        path.write_text(json.dumps(doc))
        return path

    @contextmanager
    def started(self, *args: str) -> Iterator[tuple[subprocess.Popen[str], Lines]]:
        """A background ``repeatr``, its stderr read line by line (with arrival times) by
        a thread; killed and reaped on the way out, whatever happened."""
        proc = subprocess.Popen(
            self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        lines = Lines()

        def read_err() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.seen.append((time.monotonic(), line))
            lines.done.set()

        def read_out() -> None:
            assert proc.stdout is not None
            lines.stdout.append(proc.stdout.read())

        threads = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
        for t in threads:
            t.start()
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for t in threads:
                t.join(timeout=10)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()

    def cache_temps(self) -> list[str]:
        tmp = self.state / "tmp"
        return sorted(os.listdir(tmp)) if tmp.exists() else []

    def shelves(self) -> list[str]:
        res = self.run("cache", "ls", "--format", "json")
        assert res.code == 0, res.stderr
        found = []
        for line in res.stdout.splitlines():
            event = json.loads(line)
            if event.get("event") == "result":
                found = [s["ware"] for s in event.get("shelves", [])]
        return found


@pytest.fixture
def stress(area: Area, tmp_path: Path) -> Iterator[Stress]:
    s = Stress(area, tmp_path)
    yield s
    subprocess.run(["rm", "-rf", os.fspath(s.state)], check=False)


# ---------------------------------------------------------------- the host, before and after


def host_mounts(area: Area) -> list[str]:
    """The host's mount points and types; with STRICT unset, tmpfs mounts made by other
    sessions on this shared machine are left out (ours under the area are kept)."""
    found = []
    for line in mountinfo():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        foreign = (
            (fstype == "tmpfs" and not point.startswith(os.fspath(area.base)))
            or (fstype == "nsfs" and point.startswith("/run/netns/rpr"))
            or iproute2_netns_dir(line)
        )
        if STRICT or not foreign:
            found.append(f"{point} {fstype}")
    return sorted(found)


def processes_marked(marker: str) -> list[int]:
    """Pids whose command line or environment holds ``marker`` (a job and its children)."""
    found = set(processes_with(marker))
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.add(int(entry))
        except OSError:
            pass
    return sorted(found)


def helpers_of(pids: set[int], state: Path | None = None) -> list[int]:
    """Sandbox servers and helpers started by any of ``pids`` or by a run on ``state``.

    A spawned server's argv ends with its parent's pid (its helpers are forks
    of it); one forked by ``repeatr run`` is named ``repeatr-sandbox`` and
    has the run's own command line, hence ``--cache STATE``.
    """
    found = []
    cache = None if state is None else f"\0--cache\0{state}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/comm") as f:
                forked = f.read().strip() == PROCESS_NAME
        except OSError:
            continue
        if forked:
            if cache is not None and cache in b"\0" + cmdline:
                found.append(pid)
            continue
        if SANDBOX.encode() not in cmdline:
            continue
        argv = [a for a in cmdline.split(b"\0") if a]
        if argv and argv[-1].isdigit() and int(argv[-1]) in pids:
            found.append(pid)
    return found


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        time.sleep(0.02)


def assert_host_clean(
    stress: Stress,
    mounts_before: list[str],
    *,
    repeatr_pids: set[int] = frozenset(),  # type: ignore[assignment]
    markers: tuple[str, ...] = (),
    verify: bool = True,
    settle: float = 5.0,
) -> None:
    """The post-condition of every stress and fault test (see the module docstring)."""
    wait_until(
        lambda: not helpers_of(set(repeatr_pids), stress.state)
        and not any(processes_marked(m) for m in markers),
        settle,
        "no sandbox helper or job process is left",
    )
    assert stress.work_dirs() == [], "work dirs left behind"
    assert stress.cache_temps() == [], "cache temp dirs left behind"
    assert host_mounts(stress.area) == mounts_before, "the host's mount table changed"
    if verify:
        res = stress.run("cache", "verify")
        assert res.code == 0, res.stdout + res.stderr


def rng(name: str) -> random.Random:
    """A random source per test, reproducible with REPEATR_STRESS_SEED."""
    return random.Random(f"{SEED}:{name}")
