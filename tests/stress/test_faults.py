"""Runs killed (SIGKILL) or cancelled (SIGTERM, SIGINT) at random moments of every phase.

One formula goes through every phase with room to be hit: a cold cache and
a ~130 MB input of ~4,000 files (fetch + unpack), the assembly, a job that
copies that data into its output (~130 MB: the pack), and teardown. Each
phase starts with a ``--debug`` line (or, for the job, its own output);
a calibration run (per executor) measures how long each phase lasts, and
each trial signals the run at a random moment inside the phase it targets.

- SIGKILL: nothing can clean up, so the next invocation (``repeatr gc`` or
  the next ``repeatr run``, alternately) must: afterwards no work dir, no
  cache temp dir, no new mount, no sandbox helper or job process, and
  ``repeatr cache verify`` passes.
- SIGTERM / SIGINT: the run says "cancelled" (exit 8) within 5 s and has
  torn everything down itself: the same checks, with no next invocation.

``REPEATR_STRESS_SEED`` reproduces the moments; ``--soak`` multiplies them.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from repeatr.errors import Category

from .conftest import (
    SCALE,
    SEED,
    Area,
    Lines,
    Stress,
    assert_host_clean,
    host_mounts,
    rng,
    usable_executors,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

#: phase -> (the line that starts it (None: the process start), the line that ends it
#: (None: the process exit)). The job's own lines mark its start and end.
PHASES: dict[str, tuple[str | None, str | None]] = {
    "startup": (None, "repeatr: work dir "),
    "fetch+unpack": ("repeatr: work dir ", " unpacked"),
    "mount": ("repeatr: executor ", "out| start-"),
    "job": ("out| start-", "out| end-"),
    "pack": ("out| end-", "repeatr: saved output"),
    "teardown": ("repeatr: saved output", None),
}
KILLS_PER_PHASE = 9 * SCALE  # 54 SIGKILL moments by default
CANCELS_PER_PHASE = 9 * SCALE  # 54 SIGTERM/SIGINT moments by default
CANCEL_DEADLINE = 5.0
EXECUTORS = usable_executors()


@dataclass(frozen=True)
class Window:
    start: str | None
    seconds: float


def big_formula(stress: Stress, marker: str) -> Path:
    script = (
        f"echo start-{marker}; mkdir -p /task/out && cp -r /data /task/out/ && echo end-{marker}"
    )
    return stress.formula(
        script,
        name=f"big-{marker}.json",
        root=stress.area.big,
        outputs=("/task/out",),
        env={"STRESS_MARKER": marker},
    )


_windows: dict[str, dict[str, Window]] = {}


def windows(area: Area, tmp: Path, executor: str) -> dict[str, Window]:
    """How long each phase of a cold run lasts with ``executor`` (measured once)."""
    if executor not in _windows:
        tmp.mkdir(parents=True, exist_ok=True)
        stress = Stress(area, tmp)
        marker = f"calib-{uuid.uuid4().hex[:8]}"
        f = big_formula(stress, marker)
        with stress.started("run", str(f), "-e", executor, "--debug", "--no-memo") as (proc, lines):
            t0 = time.monotonic()
            assert proc.wait(timeout=120) == 0, lines.text()
            end = time.monotonic()
            lines.done.wait(10)
        found = {}
        for phase, (first, last) in PHASES.items():
            a = t0 if first is None else lines.wait_for(first)
            b = end if last is None else lines.wait_for(last)
            found[phase] = Window(first, max(b - a, 0.0))
        _windows[executor] = found
        subprocess.run(["rm", "-rf", str(stress.state)], check=False)
    return _windows[executor]


def phase_hit(lines: Lines, at: float, exited: bool) -> str:
    """The phase the run was in at ``at`` (by the lines it had printed by then)."""
    hit = "startup"
    for phase, (first, _last) in PHASES.items():
        if first is not None and any(first in line for t, line in lines.seen if t <= at):
            hit = phase
    return "after exit" if exited else hit


def signal_at_random_moment(
    stress: Stress, tmp: Path, phase: str, n: int, sig: signal.Signals
) -> tuple[subprocess.Popen[str], Lines, str, str, float]:
    """Start a cold run, signal it at a random moment of ``phase``.

    Returns the process, its lines, the job's marker, where the signal hit
    and how long the run took to exit after it.
    """
    executor = EXECUTORS[n % len(EXECUTORS)]
    window = windows(stress.area, tmp / "calib", executor)[phase]
    delay = rng(f"{sig.name}:{phase}:{n}").uniform(0.0, window.seconds)
    marker = f"stress-{uuid.uuid4().hex[:8]}"
    f = big_formula(stress, marker)
    ctx = stress.started("run", str(f), "-e", executor, "--debug", "--no-memo")
    proc, lines = ctx.__enter__()
    try:
        t0 = time.monotonic() if window.start is None else lines.wait_for(window.start)
        time.sleep(max(0.0, t0 + delay - time.monotonic()))
        at = time.monotonic()
        exited = proc.poll() is not None
        proc.send_signal(sig)
        proc.wait(timeout=60)
        took = time.monotonic() - at
        lines.done.wait(10)
    except BaseException:
        ctx.__exit__(None, None, None)
        raise
    ctx.__exit__(None, None, None)
    hit = phase_hit(lines, at, exited)
    return proc, lines, marker, f"{executor}, {hit}, {delay * 1000:.0f} ms in", took


def warehouse_temps(area: Area) -> list[Path]:
    return sorted(area.warehouse.glob(".tmp-*"))


@pytest.mark.parametrize("n", range(KILLS_PER_PHASE))
@pytest.mark.parametrize("phase", list(PHASES))
def test_sigkill_then_next_invocation_cleans_up(
    stress: Stress, tmp_path: Path, phase: str, n: int
) -> None:
    mounts_before = host_mounts(stress.area)
    proc, _lines, marker, where, _ = signal_at_random_moment(
        stress, tmp_path, phase, n, signal.SIGKILL
    )
    context = f"SIGKILL ({where}, seed {SEED})"
    assert proc.returncode in (-signal.SIGKILL, 0), context
    if n % 2:
        tiny = stress.formula("true", name="tiny.json")
        res = stress.run("run", str(tiny), "-e", "ns")
    else:
        res = stress.run("gc")
    assert res.code == 0, f"{context}: {res.stderr}"
    # A ware being saved when the kill came leaves its temp file in the ca+file
    # warehouse, named by its dead owner: the next save there removes it.
    saver = stress.formula("mkdir -p /task/out", name="saver.json", outputs=("/task/out",))
    assert stress.run("run", str(saver), "-e", "ns", "--no-memo").code == 0
    assert warehouse_temps(stress.area) == [], context
    assert_host_clean(stress, mounts_before, repeatr_pids={proc.pid}, markers=(marker,))


@pytest.mark.parametrize("n", range(CANCELS_PER_PHASE))
@pytest.mark.parametrize("phase", list(PHASES))
def test_cancel_tears_down_and_exits_8(stress: Stress, tmp_path: Path, phase: str, n: int) -> None:
    sig = signal.SIGTERM if n % 2 == 0 else signal.SIGINT
    mounts_before = host_mounts(stress.area)
    proc, lines, marker, where, took = signal_at_random_moment(stress, tmp_path, phase, n, sig)
    context = f"{sig.name} ({where}, exit after {took:.2f}s, seed {SEED}):\n{lines.text()[-3000:]}"
    finished_first = proc.returncode == 0 and '"exitCode": 0' in "".join(lines.stdout)
    # A signal while the Python interpreter itself starts (before repeatr's code
    # runs) takes its default action: killed by SIGTERM, or exit 1 after a
    # KeyboardInterrupt in an import. Nothing exists yet to clean up.
    text = lines.text()
    before_repeatr = phase == "startup" and "repeatr:" not in text and (
        proc.returncode == -sig or (proc.returncode == 1 and "KeyboardInterrupt" in text)
    )
    assert (
        proc.returncode == Category.CANCELLED or finished_first or before_repeatr
    ), context
    assert took < CANCEL_DEADLINE, context
    if proc.returncode == Category.CANCELLED:
        assert "cancelled" in lines.text(), context
    assert warehouse_temps(stress.area) == [], context
    # No next invocation: the run cleaned up after itself.
    assert_host_clean(stress, mounts_before, repeatr_pids={proc.pid}, markers=(marker,))
