"""A full disk: the cache, the work dir and the target warehouse on small real tmpfs mounts.

- The state dir (cache + work dirs) on an 8 MB tmpfs, the ~130 MB big ware as
  input: the unpack fails with CACHE (9), "no space left" and the cache's
  path; no shelf, no temp dir, no work dir remain.
- The target warehouse on an 8 MB tmpfs, an output of 20 MB: the save fails
  with WAREHOUSE_UNWRITABLE (4), "no space left" and the warehouse's path;
  no ware and no temp file in the warehouse.
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
    assert res.code == Category.CACHE, res.stderr
    assert "no space left" in res.stderr.lower() and str(small / "state") in res.stderr
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
    assert res.code == Category.WAREHOUSE_UNWRITABLE, res.stderr
    assert "no space left" in res.stderr.lower() and str(wh) in res.stderr
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
