"""The cradle's steps on a real directory tree: rio's MkdirUsable, /tmp, host paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from repeatr.assemble.cradle import cradle_steps
from repeatr.assemble.ops import CRADLE_MTIME, Bind, Mkdir, Root
from repeatr.assemble.plan import plan
from repeatr.errors import JobInvalid

pytestmark = pytest.mark.root  # chown

OLD = 1_500_000_000  # an mtime the steps must put back


def _meta(path: Path) -> tuple[int, int, int, float]:
    st = os.lstat(path)
    return (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "task").mkdir(parents=True)
    os.chmod(r / "task", 0o500)
    (r / "opt").mkdir()
    os.chmod(r / "opt", 0o750)
    for d in (r / "task", r / "opt", r):
        os.utime(d, (OLD, OLD))
    return r


def test_existing_cwd_is_owned_and_writable(root: Path) -> None:
    """An image's /task (root-owned, r-x): chowned to the job, u+rwx, mtime kept."""
    Mkdir("/task", 0o755, 1000, 1000).execute(Root(os.fspath(root)))
    assert _meta(root / "task") == (0o700, 1000, 1000, OLD)
    assert os.stat(root).st_mtime == OLD


def test_cwd_at_the_root(root: Path) -> None:
    """rio's Split starts at the root: for a cwd of "/" the root is the leaf."""
    os.chmod(root, 0o750)
    Mkdir("/", 0o755, 1000, 1000).execute(Root(os.fspath(root)))
    assert _meta(root) == (0o750, 1000, 1000, OLD)


def test_missing_parents_are_the_jobs(root: Path) -> None:
    """/opt exists (o+x added), /opt/a and /opt/a/b are made uid:gid 0755 2010-01-01."""
    os.chmod(root, 0o750)
    Mkdir("/opt/a/b", 0o755, 1000, 1001).execute(Root(os.fspath(root)))
    assert _meta(root) == (0o751, 0, 0, OLD)  # a parent too
    assert _meta(root / "opt") == (0o751, 0, 0, OLD)
    assert _meta(root / "opt" / "a") == (0o755, 1000, 1001, CRADLE_MTIME)
    assert _meta(root / "opt" / "a" / "b") == (0o755, 1000, 1001, CRADLE_MTIME)


def test_tmp_is_forced_sticky(root: Path) -> None:
    (root / "tmp").mkdir(mode=0o700)
    os.utime(root / "tmp", (OLD, OLD))
    os.utime(root, (OLD, OLD))
    Mkdir("/tmp", 0o1777, usable=False).execute(Root(os.fspath(root)))
    assert _meta(root / "tmp") == (0o1777, 0, 0, OLD)
    Mkdir("/var/tmp", 0o1777, usable=False).execute(Root(os.fspath(root)))
    assert _meta(root / "var") == (0o755, 0, 0, CRADLE_MTIME)
    assert _meta(root / "var" / "tmp") == (0o1777, 0, 0, CRADLE_MTIME)
    assert os.stat(root).st_mtime == OLD


def test_host_paths_are_left_alone(root: Path, tmp_path: Path) -> None:
    """#11 finding 6: a step at or under a host bind changes nothing there."""
    host = tmp_path / "tmp"  # the container's /tmp when tmp_path is the root
    host.mkdir(mode=0o700)
    os.utime(host, (OLD, OLD))
    before = _meta(host)
    p = plan(
        [Bind(os.fspath(host), "/tmp", ro=False)],
        cradle_steps(cwd="/tmp/work", home="/tmp", uid=1000, gid=1000),
    )
    # Executed on the host tree itself, as the bind shows it in the container.
    for step in p.cradle:
        assert step.host == "/tmp"
        step.execute(Root(os.fspath(tmp_path)))
    assert _meta(host) == before
    assert not (host / "work").exists()


def test_symlinked_cwd_is_a_bad_job(root: Path) -> None:
    (root / "link").symlink_to("/etc")
    with pytest.raises(JobInvalid):
        Mkdir("/link/x", 0o755, 1000, 1000).execute(Root(os.fspath(root)))
    assert not os.path.exists("/etc/x")


def test_mountinfo_paths_are_unescaped() -> None:
    from repeatr.assemble.release import _unescape

    assert _unescape(r"/a\040b\011c\134d") == "/a b\tc\\d"
    assert _unescape("/plain") == "/plain"
    assert _unescape("/x\\04") == "/x\\04"
