"""Removing a run's work dir: everything in it, nothing outside it, what is held reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr import workdir

pytestmark = pytest.mark.root


def _tree(base: Path) -> tuple[Path, Path, Path]:
    """A work dir with what a job and overlayfs leave (deep dirs, a mode-000 dir, a fifo,
    symlinks to a dir and a file outside it, a dangling one); the outside dir and file."""
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    keep_file = base / "keep-file"
    keep_file.write_text("keep")
    work = base / "work"
    deep = work / "upper" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    locked = work / "work" / "work"
    locked.mkdir(parents=True)
    (locked / "inner").write_text("x")
    locked.chmod(0)
    os.mkfifo(work / "upper" / "fifo")
    (work / "upper" / "to-dir").symlink_to(outside)
    (work / "upper" / "a" / "to-file").symlink_to(keep_file)
    (work / "upper" / "dangling").symlink_to(base / "nowhere")
    return work, outside, keep_file


def test_removes_the_tree_and_follows_no_symlink(tmp_path: Path) -> None:
    work, outside, keep_file = _tree(tmp_path)
    assert workdir.remove(work) == []
    assert not os.path.lexists(work)
    assert (outside / "keep").read_text() == "keep"
    assert keep_file.read_text() == "keep"


def test_a_symlink_as_the_work_dir_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    link = tmp_path / "work"
    link.symlink_to(outside)
    left = workdir.remove(link, attempts=1)
    assert left and str(link) in left[0]
    assert (outside / "keep").read_text() == "keep"


def test_what_is_held_is_reported(tmp_path: Path) -> None:
    work = tmp_path / "work"
    held = work / "merged"
    held.mkdir(parents=True)
    (work / "other").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(held)], check=True)
    try:
        left = workdir.remove(work, attempts=2)
        assert any(entry.startswith(f"{held}:") for entry in left), left
        assert not (work / "other").exists()  # the rest went
    finally:
        subprocess.run(["umount", str(held)], check=True)
    assert workdir.remove(work) == []
    assert not work.exists()


def test_missing_is_fine(tmp_path: Path) -> None:
    assert workdir.remove(tmp_path / "never") == []


def test_does_not_import_shutil() -> None:
    """A single run removes its work dir without ``shutil`` (and what it imports)."""
    code = "import sys, repeatr.workdir; print('shutil' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_tree_deeper_than_the_recursion_and_open_file_limits(tmp_path: Path) -> None:
    """A job may nest directories as deep as it likes: removed all the same, in a process
    whose recursion limit and open-file limit are far below the depth."""
    work = tmp_path / "work"
    work.mkdir()
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(2000):
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(fd)
    code = (
        "import resource, sys; from pathlib import Path; from repeatr import workdir;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); sys.setrecursionlimit(500);"
        f"print(workdir.remove(Path({str(work)!r})))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
        assert not os.path.lexists(work)
    finally:
        # Never leave the tree behind for pytest: its rmtree of old base temp dirs
        # recurses, and a RecursionError there fails a later session at exit.
        workdir.remove(work)
