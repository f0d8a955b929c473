"""flock locks between real processes: exclusion, sharing, timeouts naming the holder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from repeatr import locks
from repeatr.errors import Category
from repeatr.owner import Owner
from tests.cache.conftest import Workers, wait_for, workers

__all__ = ["workers"]  # the cache tests' fixture, used here too


def _hold_in_worker(workers: Workers, path: Path, tmp_path: Path) -> tuple[int, Path]:
    hold = tmp_path / f"hold-{len(workers.procs)}"
    hold.mkdir()
    proc = workers.start(cmd="lock", path=str(path), hold=str(hold))
    wait_for((hold / "held").exists, what="the worker to take the lock")
    return proc.pid, hold


def test_exclusive_excludes_another_process_and_names_it(tmp_path: Path, workers: Workers) -> None:
    path = tmp_path / "x.lock"
    pid, hold = _hold_in_worker(workers, path, tmp_path)
    assert locks.read_record(path) is not None
    assert locks.read_record(path).pid == pid  # type: ignore[union-attr]
    assert locks.try_lock(path) is None
    assert locks.try_lock(path, shared=True) is None
    started = time.monotonic()
    with pytest.raises(locks.LockTimeout) as caught:
        locks.acquire(path, resource="thing X", timeout=0.3, category=Category.EXECUTOR)
    assert 0.3 <= time.monotonic() - started < 2
    assert caught.value.category is Category.EXECUTOR
    assert caught.value.resource == "thing X"
    assert caught.value.holder is not None and caught.value.holder.pid == pid
    assert f"pid {pid}" in str(caught.value)

    (hold / "release").touch()
    with locks.acquire(path, resource="thing X", timeout=10) as lock:
        assert lock.held
        assert locks.read_record(path) == Owner.current()
    assert locks.read_record(path) is None  # cleared on release


def test_a_killed_holder_frees_the_lock_and_its_record_reads_stale(
    tmp_path: Path, workers: Workers
) -> None:
    path = tmp_path / "x.lock"
    pid, _ = _hold_in_worker(workers, path, tmp_path)
    os.kill(pid, signal.SIGKILL)
    workers.procs[-1].wait()
    record = locks.read_record(path)
    assert record is not None and record.pid == pid and not record.is_alive()
    with locks.exclusive(path, resource="x", timeout=5):
        assert locks.read_record(path) == Owner.current()


def test_shared_locks_coexist_and_keep_exclusive_out(tmp_path: Path) -> None:
    path = tmp_path / "inuse"
    with locks.shared(path, resource="x", timeout=1), locks.shared(path, resource="x", timeout=1):
        assert locks.is_locked(path)
        assert locks.try_lock(path) is None
        with pytest.raises(locks.LockTimeout) as caught:
            locks.acquire(path, resource="x", timeout=0.1)
        assert caught.value.category is Category.CACHE
    assert not locks.is_locked(path)
    lock = locks.try_lock(path)
    assert lock is not None
    lock.release()


def test_probing_a_missing_lock_creates_nothing(tmp_path: Path) -> None:
    assert not locks.is_locked(tmp_path / "none")
    assert locks.try_lock(tmp_path / "none", create=False) is None
    assert not (tmp_path / "none").exists()


def test_a_lock_file_unlinked_by_its_holder_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first = locks.acquire(path, resource="x", timeout=1)
    old_inode = os.stat(path).st_ino
    first.unlink()
    assert not path.exists()
    # Still held: the unlinked inode stays locked until released.
    second = locks.acquire(path, resource="x", timeout=1)
    assert os.stat(path).st_ino != old_inode
    assert locks.try_lock(path) is None
    second.release()
    first.release()
