"""Real git repositories for the ``git:`` ware tests: one with a submodule, made with git."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_AUTHOR_DATE": "2020-02-02T00:00:00Z",
    "GIT_COMMITTER_DATE": "2020-02-02T00:00:00Z",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, env=_ENV, check=True, capture_output=True, text=True,
    ).stdout.strip()


@dataclass(frozen=True)
class Repos:
    main: Path  # a work tree with .git
    sub: Path
    commit: str  # main's HEAD
    sub_commit: str

    def bare_copy(self, dest: Path, repo: Path | None = None) -> Path:
        """A bare clone of ``repo`` (main), ready for git's dumb HTTP protocol."""
        source = os.fspath(repo or self.main)
        git(dest.parent, "clone", "--quiet", "--bare", source, os.fspath(dest))
        git(dest, "update-server-info")
        return dest


def make_repos(base: Path) -> Repos:
    """``sub``: one file and a nested gitlink; ``main``: files, an executable, a
    symlink, a dir, and ``sm`` a submodule of ``sub`` (the relative URL ``../sub``)."""
    deep = base / "deep"
    deep.mkdir(parents=True)
    git(deep, "init", "--quiet")
    (deep / "d.txt").write_text("deep\n")
    git(deep, "add", ".")
    git(deep, "commit", "--quiet", "-m", "deep")

    sub = base / "sub"
    sub.mkdir()
    git(sub, "init", "--quiet")
    (sub / "s.txt").write_text("in the submodule\n")
    git(sub, "add", ".")
    git(sub, "submodule", "add", "--quiet", os.fspath(deep), "nested")
    git(sub, "commit", "--quiet", "-am", "sub")

    main = base / "main"
    main.mkdir()
    git(main, "init", "--quiet")
    (main / "a.txt").write_text("hello\n")
    (main / "dir").mkdir()
    (main / "dir" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(main / "dir" / "run.sh", 0o755)
    (main / "link").symlink_to("a.txt")
    git(main, "add", ".")
    # Relative, as hosted repositories name their siblings: ../sub from main
    # (its own upstream while it has no remote), or from main.git's URL.
    git(main, "submodule", "add", "--quiet", "../sub", "sm")
    git(main, "commit", "--quiet", "-m", "main")
    return Repos(main, sub, git(main, "rev-parse", "HEAD"), git(sub, "rev-parse", "HEAD"))
