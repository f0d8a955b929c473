"""Measuring executors: a tiny busybox rootfs and the start cost of /bin/true.

Used by ``repeatr doctor`` and ``scripts/bench/run_executors.py``. The rootfs
is the host's static busybox (``/usr/bin/busybox``, Debian's busybox-static)
with a handful of applet links: enough for ``/bin/true`` and ``sh``.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repeatr.assemble.cradle import cradle_steps, system_mounts
from repeatr.assemble.ops import Overlay
from repeatr.errors import ExecutorError
from repeatr.executors.base import Executor, JobSpec
from repeatr.executors.protocol import JobNetwork, NetworkPolicy

BUSYBOX_CANDIDATES = ("/usr/bin/busybox", "/bin/busybox")
APPLETS = ("true", "sh", "echo", "cat", "sleep")
PATH = "/bin"


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            return path
    raise ExecutorError("no busybox to build a test rootfs from",
                        hint="install it (Debian: `apt-get install busybox-static`)")


def build_rootfs(root: Path, busybox: str | None = None) -> Path:
    """A minimal rootfs in ``root`` (created): /bin/busybox and its applet links."""
    for d in ("bin", "proc", "dev", "tmp", "etc", "task"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox or find_busybox(), root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return root


@contextmanager
def scratch_rootfs(base: Path | None = None) -> Iterator[Path]:
    """A temp dir holding ``rootfs`` (built) and room for run workdirs; removed after."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="repeatr-probe-", dir=base))
    try:
        build_rootfs(tmp / "rootfs")
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def true_job(rootfs: Path, workdir: Path, executor: Executor) -> JobSpec:
    caps = executor.capabilities()
    return JobSpec(
        argv=("/bin/true",),
        env=(("PATH", PATH),),
        workdir=workdir,
        mounts=(
            Overlay((os.fspath(rootfs),), "/", os.fspath(workdir / "rw" / "upper"),
                    os.fspath(workdir / "rw" / "work")),
            *system_mounts(),
        ),
        cradle=cradle_steps(cwd="/task", home="/root", uid=0, gid=0),
        cwd="/task",
        uid=0,
        gid=0,
        network=JobNetwork(
            policy=NetworkPolicy.NONE if NetworkPolicy.NONE in caps.networks
            else NetworkPolicy.HOST
        ),
    )


async def _discard(stream: str, line: bytes) -> None:
    pass


async def start_cost(executor: Executor, area: Path, runs: int = 5) -> list[float]:
    """Wall-clock seconds of ``runs`` warm /bin/true runs (after one warm-up run)."""
    times: list[float] = []
    for i in range(runs + 1):
        workdir = area / f"run{i}"
        workdir.mkdir()
        try:
            t0 = time.perf_counter()
            result = await executor.run(true_job(area / "rootfs", workdir, executor),
                                        on_output=_discard)
            elapsed = time.perf_counter() - t0
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if result.exit_code != 0:
            raise ExecutorError(f"{executor.name}: /bin/true exited {result.exit_code}")
        if i:
            times.append(elapsed)
    return times


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 1)
