"""The one remover of trees a job or a ware shaped (``repeatr.linux.rmtree``): all of the
tree goes, however deep or locked; nothing outside it, nothing behind a mount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr.linux import rmtree
from repeatr.linux.rmtree import remove_tree
from tests.fileset.trees import nest

pytestmark = pytest.mark.root

NOBODY = 65534
KEEP = "keep"


def _outside(base: Path) -> Path:
    outside = base / "outside"
    outside.mkdir()
    (outside / "keep").write_text(KEEP)
    return outside


def test_symlinks_are_removed_not_followed(tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    top = tmp_path / "tree"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "to-dir").symlink_to(outside)
    (top / "a" / "to-parent").symlink_to("../..")  # the top's parent: tmp_path
    (top / "a" / "b" / "to-file").symlink_to(outside / "keep")
    (top / "dangling").symlink_to(tmp_path / "nowhere")
    assert remove_tree(top) == []
    assert not os.path.lexists(top)
    assert (outside / "keep").read_text() == KEEP
    assert sorted(os.listdir(tmp_path)) == ["outside"]


def test_the_top_itself(tmp_path: Path) -> None:
    """A symlink there is reported and left; a file is unlinked; missing is fine unless
    ``missing_ok`` is false."""
    outside = _outside(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(outside)
    left = remove_tree(link)
    assert len(left) == 1 and left[0].startswith(f"{link}:"), left
    assert link.is_symlink() and (outside / "keep").read_text() == KEEP
    shelf = tmp_path / "single-file"
    shelf.write_text("x")
    assert remove_tree(shelf) == [] and not shelf.exists()
    assert remove_tree(tmp_path / "never") == []
    left = remove_tree(tmp_path / "never", missing_ok=False)
    assert len(left) == 1 and left[0].startswith(f"{tmp_path / 'never'}:"), left


def test_a_tree_deeper_than_the_recursion_and_open_file_limits(tmp_path: Path) -> None:
    """3,000 levels in a process whose recursion limit (500) and open-file limit (64)
    are far below the depth."""
    top = tmp_path / "deep"
    code = (
        "import resource, sys; from repeatr.linux.rmtree import remove_tree;"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); sys.setrecursionlimit(500);"
        f"print(remove_tree({str(top)!r}))"
    )
    try:
        nest(top, 3000)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
        assert not os.path.lexists(top)
    finally:
        # Never leave a deep tree to pytest: its cleanup of old base temp dirs recurses.
        remove_tree(top)


# As nobody, in the dir it owns (cwd: nobody cannot walk down to pytest's tmp_path).
# Imports happen as root, before the drop: nobody may not be able to read the checkout.
_AS_NOBODY = """
import os, sys
from repeatr.linux.rmtree import remove_tree
os.chdir(sys.argv[1])
os.setgroups([]); os.setgid({nobody}); os.setuid({nobody})
for d in ("tree/r500/sub000", "tree/none000/deeper", "tree/w300", "tree/rw600/sub"):
    os.makedirs(d)
for f in ("tree/r500/f", "tree/r500/sub000/f", "tree/none000/deeper/f", "tree/w300/f",
          "tree/rw600/sub/f"):
    open(f, "w").close()
os.symlink("../..", "tree/r500/up")
for d, mode in (("tree/r500/sub000", 0o000), ("tree/r500", 0o500),
                ("tree/none000/deeper", 0o500), ("tree/none000", 0o000),
                ("tree/w300", 0o300), ("tree/rw600", 0o600), ("tree", 0o500)):
    os.chmod(d, mode)
print(remove_tree("tree"))
print(os.path.lexists("tree"))
"""


def test_read_only_dirs_as_non_root(tmp_path: Path) -> None:
    """A ware's dirs may be 0500, 0000 (or 0300, 0600): as a user who is not root, each
    is made u+rwx (never through a symlink) and emptied."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, NOBODY, NOBODY)
    (tmp_path / "keep").write_text(KEEP)
    code = _AS_NOBODY.format(nobody=NOBODY)
    try:
        out = subprocess.run(
            [sys.executable, "-c", code, os.fspath(home)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["[]", "False"], out.stdout
        assert (tmp_path / "keep").read_text() == KEEP
    finally:
        remove_tree(home)


def test_a_mount_inside_is_reported_not_emptied(tmp_path: Path) -> None:
    top = tmp_path / "tree"
    mnt = top / "a" / "mnt"
    mnt.mkdir(parents=True)
    (top / "a" / "other").write_text("x")
    (top / "b").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", os.fspath(mnt)], check=True)
    try:
        (mnt / "on-the-mount").write_text(KEEP)
        (mnt / "dir").mkdir()
        left = remove_tree(top)
        assert len(left) == 3, left  # the mount point, then a and the top: not empty
        assert left[0].startswith(f"{mnt}:") and "mount point" in left[0], left
        assert (mnt / "on-the-mount").read_text() == KEEP
        assert (mnt / "dir").is_dir()
        assert sorted(os.listdir(top)) == ["a"] and os.listdir(top / "a") == ["mnt"]
    finally:
        subprocess.run(["umount", os.fspath(mnt)], check=True)
    assert remove_tree(top) == []
    assert not os.path.lexists(top)


def test_a_dir_swapped_for_a_symlink_meanwhile_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between listing ``a`` and entering ``a/victim``, the job swaps the dir for a symlink
    to a dir outside: the symlink is unlinked, the outside dir untouched."""
    outside = _outside(tmp_path)
    top = tmp_path / "tree"
    victim = top / "a" / "victim"
    victim.mkdir(parents=True)
    (victim / "f").write_text("x")
    moved = tmp_path / "moved"
    clear = rmtree._clear

    def swapping(dir_fd: int, where: str, failures: list[str]) -> list[str]:
        names = clear(dir_fd, where, failures)
        if where == f"{top}/a":
            assert names == ["victim"]
            victim.rename(moved)
            victim.symlink_to(outside)
        return names

    monkeypatch.setattr(rmtree, "_clear", swapping)
    assert remove_tree(top) == []
    assert not os.path.lexists(top)
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_text() == KEEP
    assert (moved / "f").read_text() == "x"
