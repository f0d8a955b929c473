"""The prepared world the doc pages run in, built once per session on a tmpfs.

A reader follows the docs with Docker Hub's busybox image (``skopeo copy
docker://busybox oci:busybox:latest``). There is no registry here, so the
session builds the same kind of OCI layout locally: umoci makes the layout,
scripts/mkrootfs fills its rootfs from Debian's busybox-static. Everything
else runs through the real ``repeatr`` command.

What a page can ask for with ``<!-- setup: ... -->`` (each copied into the
page's own scratch dir, which is otherwise empty):

- ``oci-layout``: ``./busybox``, an OCI layout with the tag ``latest``;
- ``rootfs``: ``./rootfs``, the same root filesystem as a plain directory;
- ``wares``: ``./wares/``, a ``ca+file`` warehouse holding the rootfs ware;
- ``examples``: ``./examples``, a copy of the repository's examples/ (without
  build results), and ``./scripts/mkrootfs`` beside it, where it expects it.

Each page also gets its own repeatr state (``REPEATR_CACHE``, outside the
scratch dir: cache, memo and work dirs start empty) and ``.venv/bin`` first
on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from repeatr.linux import libc
from tests.rootfs import MKROOTFS, REPO

VENV_BIN = Path(sys.executable).parent

#: What each page's prepared world holds; see the module docstring.
SETUPS = ("oci-layout", "rootfs", "wares", "examples")

#: Run statistics, printed at the end of the session (see pytest_terminal_summary).
STATS: dict[str, dict[str, object]] = {}


@dataclass(frozen=True)
class DocsWorld:
    base: Path  # the tmpfs
    layout: Path  # OCI layout, tag latest
    rootfs: Path
    wares: Path  # ca+file warehouse with the rootfs ware
    rootfs_id: str  # its ware ID

    def env(self, state: Path) -> dict[str, str]:
        return {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": os.fspath(state / "home"),
            "REPEATR_CACHE": os.fspath(state / "cache"),
            "TMPDIR": os.fspath(state / "tmp"),
            "LC_ALL": "C.UTF-8",
            "TERM": "dumb",
            "COLUMNS": "80",
        }

    def prepare(self, scratch: Path, setup: list[str]) -> None:
        for key in setup:
            if key not in SETUPS:
                raise ValueError(f"unknown setup {key!r}; known: {', '.join(SETUPS)}")
        if "oci-layout" in setup:
            shutil.copytree(self.layout, scratch / "busybox", symlinks=True)
        # cp -a keeps owners, modes, mtimes and symlinks exactly (copytree loses owners).
        if "rootfs" in setup:
            subprocess.run(["cp", "-a", self.rootfs, scratch / "rootfs"], check=True)
        if "wares" in setup:
            subprocess.run(["cp", "-a", self.wares, scratch / "wares"], check=True)
        if "examples" in setup:
            shutil.copytree(
                REPO / "examples", scratch / "examples", symlinks=True,
                ignore=shutil.ignore_patterns("build", "warehouse"),
            )
            (scratch / "scripts").mkdir()
            shutil.copy2(MKROOTFS, scratch / "scripts" / "mkrootfs")


def _run(*argv: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [os.fspath(a) for a in argv], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}: {proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def docs_world() -> Iterator[DocsWorld]:
    if os.geteuid() != 0:
        pytest.fail("the doc tests need root (they run formulas and mount a tmpfs)")
    for tool in ("umoci", "busybox"):
        if shutil.which(tool) is None:
            pytest.fail(f"the doc tests need {tool}: scripts/setup installs it")
    base = Path(tempfile.mkdtemp(prefix="repeatr-docs-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=1g,mode=755")
    try:
        layout = base / "oci" / "busybox"
        layout.parent.mkdir()
        _run("umoci", "init", "--layout", layout)
        _run("umoci", "new", "--image", f"{layout}:latest")
        _run("umoci", "unpack", "--image", f"{layout}:latest", base / "bundle")
        _run(sys.executable, MKROOTFS, base / "bundle" / "rootfs")
        _run("umoci", "repack", "--image", f"{layout}:latest", base / "bundle")
        shutil.rmtree(base / "bundle")
        rootfs = base / "rootfs"
        _run(sys.executable, MKROOTFS, rootfs)
        wares = base / "wares"
        wares.mkdir()
        state = base / "setup-state"
        rootfs_id = subprocess.run(
            [VENV_BIN / "repeatr", "import", f"oci:{layout}:latest",
             "--target", f"ca+file://{wares}/", "--quiet"],
            env={**os.environ, "REPEATR_CACHE": os.fspath(state)},
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        yield DocsWorld(base, layout, rootfs, wares, rootfs_id)
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not STATS:
        return
    tr = terminalreporter
    tr.section("doc pages")
    for page, stats in sorted(STATS.items()):
        skipped = stats.get("not_run", [])
        assert isinstance(skipped, list)
        tr.write_line(
            f"{page}: {stats.get('commands', 0)} commands and {stats.get('scripts', 0)} "
            f"scripts run, {stats.get('files', 0)} files written, {len(skipped)} blocks not run"
            + "".join(f"\n    not run (line {line}): {why}" for line, why in skipped)
        )


