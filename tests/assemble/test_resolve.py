"""Walking container paths without following symlinks (no mounts needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repeatr.assemble.ops import Mkdir, Root
from repeatr.assemble.resolve import open_in_root, open_root
from repeatr.errors import AssemblyError, JobInvalid


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "file").write_text("x")
    (r / "abs").symlink_to("/etc")
    (r / "rel").symlink_to("etc")
    (r / "up").symlink_to("../../../..")
    return r


def _open(root: Path, path: str, **kw: object) -> int:
    rfd = open_root(os.fspath(root))
    try:
        return open_in_root(rfd, path, **kw)  # type: ignore[arg-type]
    finally:
        os.close(rfd)


def test_plain_path(root: Path) -> None:
    fd = _open(root, "/etc")
    assert os.path.samestat(os.fstat(fd), os.stat(root / "etc"))
    os.close(fd)


@pytest.mark.parametrize("path", ["/abs", "/abs/passwd", "/rel/x", "/up/etc"])
def test_symlinks_refused(root: Path, path: str) -> None:
    with pytest.raises(AssemblyError, match="symlink"):
        _open(root, path, create="dir")
    assert not os.path.exists("/etc/x")


def test_missing_without_create(root: Path) -> None:
    with pytest.raises(AssemblyError, match="does not exist"):
        _open(root, "/nope")


def test_create_dirs_and_file(root: Path) -> None:
    created: list[str] = []
    os.close(_open(root, "/a/b/c", create="dir", created=created))
    assert created == ["/a", "/a/b", "/a/b/c"]
    os.close(_open(root, "/a/f", create="file"))
    assert (root / "a" / "f").is_file()


def test_through_a_file(root: Path) -> None:
    with pytest.raises(AssemblyError, match="not a directory"):
        _open(root, "/file/x", create="dir")


def test_mkdir_through_symlink(root: Path) -> None:
    # Mkdir is the cradle's step: a cwd/home the image made unusable is a bad job.
    with pytest.raises(JobInvalid):
        Mkdir("/abs/repeatr-test").execute(Root(os.fspath(root)))
    assert not os.path.exists("/etc/repeatr-test")
