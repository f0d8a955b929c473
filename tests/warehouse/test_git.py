"""``git:`` wares: a commit's tree from file://, local paths and (dumb) HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError, UsageError
from repeatr.fileset.pack import hash_dir_exact
from repeatr.model.filters import UNPACK_LOSSLESS, UNPACK_LOWPRIV
from repeatr.model.wareid import WareID
from repeatr.warehouse.fetch import unpack_ware
from tests.gitrepos import Repos, git, make_repos

from .conftest import Served


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    return make_repos(tmp_path / "repos")


def _listing(root: Path) -> dict[str, tuple[str, int, int, int, int]]:
    """path -> (kind, mode, uid, gid, mtime) for everything under root, root included."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(path)
        kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
        out[str(path.relative_to(root))] = (
            kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime),
        )
    return out


# What rio placed for this commit (transmat/git): root and submodule roots 0755 0:0,
# everything else uid/gid 1000, mtime 2010-01-01; the nested gitlink an empty dir.
EXPECTED = {
    ".": ("d", 0o755, 0, 0, 1262304000),
    ".gitmodules": ("f", 0o644, 1000, 1000, 1262304000),
    "a.txt": ("f", 0o644, 1000, 1000, 1262304000),
    "dir": ("d", 0o755, 1000, 1000, 1262304000),
    "dir/run.sh": ("f", 0o755, 1000, 1000, 1262304000),
    "link": ("l", 0o777, 1000, 1000, 1262304000),
    "sm": ("d", 0o755, 0, 0, 1262304000),
    "sm/.gitmodules": ("f", 0o644, 1000, 1000, 1262304000),
    "sm/nested": ("d", 0o755, 1000, 1000, 1262304000),
    "sm/s.txt": ("f", 0o644, 1000, 1000, 1262304000),
}


def test_unpack_from_file_url_with_submodule(repos: Repos, tmp_path: Path) -> None:
    ware = WareID.parse(f"git:{repos.commit}")
    dest = tmp_path / "out"
    result = unpack_ware(ware, [f"file://{repos.main}"], dest, filters=UNPACK_LOSSLESS)
    assert result.ware_id == ware == result.filtered_id
    assert _listing(dest) == EXPECTED
    assert (dest / "a.txt").read_text() == "hello\n"
    assert (dest / "sm" / "s.txt").read_text() == "in the submodule\n"
    assert os.readlink(dest / "link") == "a.txt"
    assert not (dest / ".git").exists() and not (dest / "sm" / ".git").exists()
    assert list((dest / "sm" / "nested").iterdir()) == []
    # What the cache records is what is on disk.
    assert hash_dir_exact(dest) == result.strict_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repeatr-")]


def test_local_path_and_dumb_http_give_the_same_tree(
    repos: Repos, http_root: Served, tmp_path: Path
) -> None:
    ware = WareID.parse(f"git:{repos.commit}")
    repos.bare_copy(http_root.root / "main.git")
    repos.bare_copy(http_root.root / "sub", repos.sub)  # ../sub from main.git's URL
    by_file = unpack_ware(ware, [os.fspath(repos.main)], tmp_path / "a", filters=UNPACK_LOSSLESS)
    by_http = unpack_ware(
        ware,
        [f"{http_root.url}/nothing-here.git", f"{http_root.url}/main.git"],
        tmp_path / "b",
        filters=UNPACK_LOSSLESS,
    )
    assert by_file.strict_id == by_http.strict_id
    assert _listing(tmp_path / "b") == EXPECTED
    mine = unpack_ware(ware, [f"{http_root.url}/main.git"], tmp_path / "c", filters=UNPACK_LOWPRIV)
    assert os.lstat(tmp_path / "c" / "a.txt").st_uid == os.geteuid()
    assert mine.ware_id == ware


@pytest.mark.parametrize("url", ["absolute", "file"])
def test_a_remote_repository_may_not_fetch_this_hosts_repositories(
    repos: Repos, http_root: Served, tmp_path: Path, url: str
) -> None:
    # A hosted superproject whose .gitmodules names a repository on this host:
    # fetching it as root would copy that repository's commit into the ware.
    evil = tmp_path / "evil"
    evil.mkdir()
    git(evil, "init", "--quiet")
    local = os.fspath(repos.sub) if url == "absolute" else f"file://{repos.sub}"
    git(evil, "submodule", "add", "--quiet", local, "stolen")
    git(evil, "commit", "--quiet", "-m", "evil")
    ware = WareID.parse(f"git:{git(evil, 'rev-parse', 'HEAD')}")
    repos.bare_copy(http_root.root / "evil.git", evil)
    dest = tmp_path / "out"
    with pytest.raises(RepeatrError) as caught:
        unpack_ware(ware, [f"{http_root.url}/evil.git"], dest, filters=UNPACK_LOSSLESS)
    assert caught.value.category == Category.WARE_CORRUPT
    assert "'stolen'" in str(caught.value) and local in str(caught.value)
    assert not dest.exists()
    # The same repository from this host may name its neighbours, as git allows.
    unpack_ware(ware, [os.fspath(evil)], dest, filters=UNPACK_LOSSLESS)
    assert (dest / "stolen" / "s.txt").read_text() == "in the submodule\n"


def test_missing_commit_and_unreachable_repo(repos: Repos, refused_url: str, tmp_path: Path) -> None:
    absent = WareID.parse("git:" + "0" * 40)
    with pytest.raises(RepeatrError) as info:
        unpack_ware(absent, [f"file://{repos.main}"], tmp_path / "x", filters=UNPACK_LOSSLESS)
    assert info.value.category is Category.WARE_NOT_FOUND
    with pytest.raises(RepeatrError) as info:
        unpack_ware(
            WareID.parse(f"git:{repos.commit}"),
            [f"{refused_url}/main.git", f"file://{tmp_path}/no-such-repo"],
            tmp_path / "y",
            filters=UNPACK_LOSSLESS,
        )
    assert info.value.category is Category.WAREHOUSE_UNAVAILABLE
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repeatr-")]


def test_git_ware_ids_are_full_commit_hashes() -> None:
    assert str(WareID.parse("git:" + "a" * 40)) == "git:" + "a" * 40
    for bad in ("git:abc123", "git:" + "A" * 40, "git:" + "g" * 40, "git:-"):
        with pytest.raises(UsageError):
            WareID.parse(bad)


def test_repeatr_unpack_cli(repos: Repos, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "repeatr", "unpack", f"git:{repos.commit}", "out",
         "--source", f"file://{repos.main}", "--filter", "lossless"],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": "/usr/bin:/bin", "REPEATR_CACHE": str(tmp_path / "cache")},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"git:{repos.commit}"
    assert _listing(tmp_path / "out") == EXPECTED


def test_git_wares_are_not_mirrored(repos: Repos, tmp_path: Path) -> None:
    from repeatr.warehouse.mirror import mirror

    (tmp_path / "wh").mkdir()
    with pytest.raises(UsageError):
        mirror(WareID.parse(f"git:{repos.commit}"), [f"file://{repos.main}"], f"ca+file://{tmp_path}/wh/")
    assert list((tmp_path / "wh").iterdir()) == []


def test_a_commit_no_ref_points_to(repos: Repos, tmp_path: Path) -> None:
    # A commit only reachable by its hash (a branch was reset past it): local
    # repositories, like servers that allow it, hand it out by hash.
    from tests.gitrepos import git

    (repos.main / "later.txt").write_text("later\n")
    git(repos.main, "add", "later.txt")
    git(repos.main, "commit", "--quiet", "-m", "later")
    later = git(repos.main, "rev-parse", "HEAD")
    git(repos.main, "reset", "--quiet", "--hard", repos.commit)
    dest = tmp_path / "out"
    unpack_ware(WareID.parse(f"git:{later}"), [f"file://{repos.main}"], dest, filters=UNPACK_LOSSLESS)
    assert (dest / "later.txt").read_text() == "later\n"


def test_a_slow_fetch_is_cancelled(silent_url: str, tmp_path: Path) -> None:
    # A server that never answers: the checkpoint (a cancelled run's) stops git.
    import time

    started = time.monotonic()
    calls = 0

    class Stop(Exception):
        pass

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise Stop

    with pytest.raises(Stop):
        unpack_ware(
            WareID.parse("git:" + "0" * 40),
            [silent_url.replace("/ware.tgz", "/repo.git")],
            tmp_path / "out",
            filters=UNPACK_LOSSLESS,
            checkpoint=checkpoint,
        )
    assert time.monotonic() - started < 10
    # No git (nor its git-remote-http helper) is left talking to the server.
    port = silent_url.split(":")[2].split("/")[0]
    left = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"127.0.0.1:{port}".encode() in cmdline:
            left.append(cmdline)
    assert left == []
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repeatr-")]
