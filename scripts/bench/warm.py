"""Shared by the run benchmarks: a warm rootfs ware on a tmpfs, formulas, timed ``repeatr run``.

Not a benchmark itself: ``run.py``, ``run_executors.py`` and ``net.py`` import it.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def timed(fn: Callable[[], object], runs: int, *, warmup: bool = False) -> float:
    """The median of ``runs`` calls of ``fn``, in ms (after one untimed call if ``warmup``)."""
    if warmup:
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def sh(*argv: str) -> None:
    """Run a command to completion, its stdout discarded, stdin empty; fail if it fails."""
    subprocess.run(
        argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, cwd=REPO
    )


@contextlib.contextmanager
def scratch(prefix: str, size: str = "1g") -> Iterator[Path]:
    """A tmpfs, unmounted and removed afterwards whatever happens."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(base)], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base)], check=False)
        base.rmdir()


class Warm:
    """A busybox rootfs packed into a warehouse under ``base``, and formulas over it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.rootfs = base / "rootfs"
        subprocess.run(
            [PY, str(REPO / "scripts" / "mkrootfs"), str(self.rootfs)],
            check=True, stdout=subprocess.DEVNULL,
        )
        self.wh = base / "wh"
        self.wh.mkdir()
        self.state = base / "state"
        self.ware = subprocess.run(
            [PY, "-m", "repeatr", "pack", str(self.rootfs), "--target", f"ca+file://{self.wh}/",
             "--filter", "uid=keep,gid=keep,mtime=keep", "-q"],
            check=True, capture_output=True, text=True, cwd=REPO,
        ).stdout.strip()

    def formula(self, name: str, argv: list[str], **action: object) -> Path:
        doc = {
            "formula": {"inputs": {"/": self.ware}, "action": {"exec": argv, **action}},
            "context": {"fetchUrls": {"/": [f"ca+file://{self.wh}/"]}},
        }
        path = self.base / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    def argv(self, *args: str) -> list[str]:
        return [PY, "-m", "repeatr", *args, "--cache", str(self.state)]

    def run(self, *args: str) -> tuple[float, float]:
        """Seconds until the run record is complete on stdout, and until the process exited."""
        start = time.perf_counter()
        proc = subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO
        )
        assert proc.stdout is not None
        out = b""
        while not out.rstrip().endswith(b"}"):
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            out += chunk
        record = time.perf_counter() - start
        proc.stdout.close()
        if proc.wait() != 0:
            raise SystemExit(f"repeatr {' '.join(args)} failed (exit {proc.returncode})")
        return record, time.perf_counter() - start
