"""The original's example formulas, run unchanged by its own example_runAll.sh.

``tests/fixtures/repeatr`` is laid out as polydawn/repeatr at its last commit
(NOTICE): ``example_0*.formula``, ``example_runAll.sh`` and
``fixtures/busybash.tgz``. The script runs ``repeatr run $REPEATR_FLAGS --
$f`` for each formula, as the original's README suggests
(``REPEATR_FLAGS='--executor=runc' ./example_runAll.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from repeatr.linux import libc

pytestmark = pytest.mark.root

ORIGINAL = Path(__file__).parent.parent / "fixtures" / "repeatr"
BUSYBASH = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"
FORMULAS = sorted(p.name for p in ORIGINAL.glob("example_0*.formula"))


@contextmanager
def _tmpfs() -> Iterator[Path]:
    """A scratch tmpfs: the unpacks are small-file work."""
    base = Path(tempfile.mkdtemp(prefix="repeatr-examples-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=256m,mode=755")
    try:
        yield base
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def _sections(stdout: str) -> dict[str, str]:
    """example_runAll.sh's stdout: ``==== f ====``, repeatr's stdout, ``-------``."""
    found: dict[str, str] = {}
    name = None
    for line in stdout.splitlines(keepends=True):
        if line.startswith("==== ") and line.rstrip().endswith(" ===="):
            name = line.strip().strip("= ").strip()
            found[name] = ""
        elif line.rstrip() == "-------":
            name = None
        elif name is not None:
            found[name] += line
    return found


@pytest.mark.parametrize(
    "executor",
    [pytest.param(n, marks=pytest.mark.runtime(n)) for n in ("ns", "chroot", "runc", "crun", "gvisor")],
)
def test_example_run_all(executor: str) -> None:
    with _tmpfs() as base:
        repo = base / "repeatr"
        shutil.copytree(ORIGINAL, repo, symlinks=True)
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', os.defpath)}",
            "REPEATR_FLAGS": f"--executor={executor}",
            "REPEATR_CACHE": os.fspath(base / "state"),
        }
        assert shutil.which("repeatr", path=env["PATH"]) == str(Path(sys.executable).parent / "repeatr")
        proc = subprocess.run(
            ["./example_runAll.sh"], cwd=repo, env=env,
            capture_output=True, text=True, timeout=600, check=False,
        )
        records: dict[str, dict[str, Any]] = {}
        for name, text in _sections(proc.stdout).items():
            assert text.strip(), f"{name} printed no run record:\n{proc.stderr}"
            records[name] = json.loads(text)
        assert sorted(records) == FORMULAS, proc.stderr
        for name, record in records.items():
            assert record["exitCode"] == 0, f"{name}:\n{proc.stderr}"
            assert record["executor"] == executor
        err = proc.stderr
        assert "out| hello world!" in err
        assert "out| bash scripting inlines" in err
        assert "out| crashoverride is the best ever" in err
        # example_05: uid 2000 made out/ in the cradle's /task.
        assert "out| /task\n" in err
        results = {name: r["results"] for name, r in records.items()}
        assert results["example_06_roundtripRootfs.formula"] == {"/": BUSYBASH}
        saved = results["example_03_output.formula"]["/task/out"]
        for ware in (saved, results["example_05_userinfo.formula"]["/task/out"]):
            h = ware.split(":", 1)[1]
            assert (repo / "wares" / h[:3] / h[3:6] / h).is_file()
        assert results["example_01_hello.formula"] == {}
