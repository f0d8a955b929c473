"""A job's disk: ``limits.disk`` and the default reserve watch, through the real CLI.

- ``limits.disk`` 16M, a job writing 40 MB on every usable executor: the job's
  write gets ENOSPC, the run exits 20 (the job failed) and the record says
  ``"stopped": "disk limit"`` and carries the limit; no loop device, mount,
  image or work dir is left.
- The same run SIGKILLed while its job holds the limited disk: once the
  helper has followed its parent, no mount and no loop device are left; the
  next ``repeatr gc`` removes the work dir with the image in it.
- No ``limits.disk``, the state dir on a 256 MB tmpfs, a job that keeps
  writing: the helper's watch kills it when the free space falls below the
  reserve (5%), the record says ``"stopped": "disk reserve"``.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category
from repeatr.linux import libc

from .conftest import (
    Stress,
    assert_host_clean,
    helpers_of,
    host_mounts,
    usable_executors,
    wait_until,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


def loop_backing_files() -> list[str]:
    found = []
    for dev in os.listdir("/sys/block"):
        try:
            with open(f"/sys/block/{dev}/loop/backing_file") as f:
                found.append(f.read().strip())
        except OSError:
            continue
    return found


def ours(stress: Stress) -> list[str]:
    return [f for f in loop_backing_files() if f.startswith(os.fspath(stress.state))]


def with_limits(path: Path, **limits: object) -> Path:
    doc = json.loads(path.read_text())
    doc["formula"]["action"]["limits"] = limits
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("executor", usable_executors())
def test_a_job_over_its_disk_limit(stress: Stress, executor: str) -> None:
    mounts_before = host_mounts(stress.area)
    f = with_limits(
        stress.formula("head -c 40000000 /dev/zero > /task/big; exit $?", name="disk.json"),
        disk="16M",
    )
    res = stress.run("run", str(f), "-e", executor)
    assert res.code == Category.JOB_FAILED, res.stderr
    record = res.record()
    assert record["exitCode"] != 0
    assert record["stopped"] == "disk limit"
    assert record["limits"]["disk"] == 16 << 20
    assert ours(stress) == []
    assert stress.work_dirs() == []
    assert_host_clean(stress, mounts_before)


def test_sigkill_leaves_no_disk_behind(stress: Stress) -> None:
    mounts_before = host_mounts(stress.area)
    f = with_limits(
        stress.formula("head -c 1000000 /dev/zero > /task/x; echo holding; sleep 600",
                       name="hold.json"),
        disk="64M",
    )
    with stress.started("run", str(f), "-e", "ns") as (proc, lines):
        lines.wait_for("out| holding")
        assert ours(stress) != []  # the limited disk is in use
        helpers = helpers_of({proc.pid}, stress.state)
        assert helpers  # the server and the job's helper
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in helpers), 10,
               "the helper followed its parent")
    wait_until(lambda: ours(stress) == [], 10, "the loop device detached itself")
    assert stress.work_dirs() != []  # the image is in it, for gc to remove
    res = stress.run("gc")
    assert res.code == 0, res.stderr
    assert stress.work_dirs() == []
    assert_host_clean(stress, mounts_before)


@pytest.fixture
def roomy() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="repeatr-reserve-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=256m,mode=755")
    try:
        yield base
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def test_the_default_watch_stops_a_job_eating_the_last_reserve(
    stress: Stress, roomy: Path
) -> None:
    mounts_before = host_mounts(stress.area)
    stress.state = roomy / "state"
    f = stress.formula(
        "i=0; while [ $i -lt 600 ]; do head -c 1048576 /dev/zero >> /task/big; i=$((i+1)); done;"
        " echo survived",
        name="eat.json",
    )
    res = stress.run("run", str(f), "-e", "ns")
    assert res.code == Category.JOB_FAILED, res.stderr
    record = res.record()
    assert record["stopped"] == "disk reserve"
    assert record["exitCode"] == 137
    assert "out| survived" not in res.stderr
    assert stress.work_dirs() == []
    st = os.statvfs(roomy)
    assert st.f_bavail * st.f_frsize > 200 << 20  # the job's writes went with its work dir
    assert_host_clean(stress, mounts_before)
