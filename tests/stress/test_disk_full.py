"""A full disk: the cache, the work dir and the target warehouse on small real tmpfs mounts.

- The state dir (cache + work dirs) on an 8 MB tmpfs, the ~130 MB big ware as
  input: the unpack fails with DISK_FULL (14), "disk full" and the cache's
  path; no shelf, no temp dir, no work dir remain.
- The target warehouse on an 8 MB tmpfs, an output of 20 MB: the save fails
  with DISK_FULL (14), "disk full" and the warehouse's path; no ware and no
  temp file in the warehouse.
- The whole state dir on an 8 MB tmpfs and a job that fills it and still
  exits 0: the memo store fails, which is a warning; the record is printed,
  the run exits 0, no memo entry or temp file is left.
- The work dir on an 8 MB tmpfs and a job writing 20 MB: the job's own write
  fails, so the job exits non-zero (20) and its error is shown; the work dir
  is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category
from repeatr.linux import libc

from .conftest import Stress, assert_host_clean, host_mounts

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def small() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="repeatr-full-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=8m,mode=755")
    try:
        yield base
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def test_unpack_into_a_full_cache(stress: Stress, small: Path) -> None:
    stress.state = small / "state"
    mounts_before = host_mounts(stress.area)
    f = stress.formula("true", name="big.json", root=stress.area.big)
    res = stress.run("run", str(f), "-e", "ns")
    assert res.code == Category.DISK_FULL, res.stderr
    assert "disk full" in res.stderr.lower() and str(small / "state") in res.stderr
    assert stress.shelves() == []
    assert_host_clean(stress, mounts_before)
    st = os.statvfs(small)  # only bookkeeping (lock files) is left on the disk
    assert (st.f_blocks - st.f_bfree) * st.f_frsize < 256 << 10


def test_output_larger_than_the_warehouse(stress: Stress, small: Path) -> None:
    mounts_before = host_mounts(stress.area)
    wh = small / "wh"
    wh.mkdir()
    f = stress.formula(
        "mkdir -p /task/out && head -c 20000000 /dev/urandom > /task/out/big",
        name="out.json",
        outputs=("/task/out",),
    )
    text = f.read_text().replace(f'"/task/out": "{stress.area.url}"', f'"/task/out": "ca+file://{wh}/"')
    f.write_text(text)
    res = stress.run("run", str(f), "-e", "ns")
    assert res.code == Category.DISK_FULL, res.stderr
    assert "disk full" in res.stderr.lower() and str(wh) in res.stderr
    assert list(wh.iterdir()) == [], "a partial ware or temp file was left in the warehouse"
    assert_host_clean(stress, mounts_before)


def test_job_filling_its_work_dir(stress: Stress, small: Path) -> None:
    mounts_before = host_mounts(stress.area)
    # The shelf must fit, the writes must not: unpack busybox on the big tmpfs
    # first, then move the work dirs onto the small one.
    warm = stress.formula("true", name="warm.json")
    assert stress.run("run", str(warm), "-e", "ns").code == 0
    (small / "runs").mkdir()
    (stress.state / "runs").rmdir()
    (stress.state / "runs").symlink_to(small / "runs")
    f = stress.formula("head -c 20000000 /dev/zero > /task/big", name="job.json")
    res = stress.run("run", str(f), "-e", "ns")
    assert res.code == Category.JOB_FAILED, res.stderr
    assert "err| head:" in res.stderr  # the job's own error (ENOSPC; busybox says "I/O error")
    assert list((small / "runs").iterdir()) == []
    (stress.state / "runs").unlink()
    assert_host_clean(stress, mounts_before)


def test_job_fills_the_state_disk_and_exits_0(stress: Stress, small: Path) -> None:
    """The issue's case: before, memo.put crashed (exit 2) and the record was never printed."""
    mounts_before = host_mounts(stress.area)
    stress.state = small / "state"
    f = stress.formula("head -c 20000000 /dev/zero > /task/big; exit 0", name="fill.json")
    res = stress.run("run", str(f), "-e", "ns")
    assert res.code == 0, res.stderr
    assert res.record()["exitCode"] == 0  # the record was printed
    assert "could not remember this run" in res.stderr
    assert "Traceback" not in res.stderr
    memo = small / "state" / "memo"
    left = [p.name for p in memo.rglob("*") if p.is_file()] if memo.exists() else []
    assert left == [], "a partial memo entry or temp file was left"
    assert stress.work_dirs() == []
    assert_host_clean(stress, mounts_before)


def test_output_dir_on_a_full_disk(stress: Stress, small: Path) -> None:
    """--output-dir on a full disk: the record is printed first; then DISK_FULL naming the
    file, and no temp file is left in the dir."""
    mounts_before = host_mounts(stress.area)
    out = small / "out"
    out.mkdir()
    with open(small / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\xa5" * 4096)
        except OSError:
            pass
    f = stress.formula("true", name="true.json")
    res = stress.run("run", str(f), "-e", "ns", "--output-dir", str(out))
    assert res.code == Category.DISK_FULL, res.stderr
    assert res.record()["exitCode"] == 0  # printed before the files were written
    assert "disk full" in res.stderr and str(out / "record.json") in res.stderr
    assert list(out.iterdir()) == []
    assert_host_clean(stress, mounts_before)
