"""The ``rio`` console script: the original rio's syntax and output over repeatr's commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from repeatr.errors import Category

from .conftest import FIXTURES, WITH_BASE, Repeatr, Result

RIO = Path(sys.executable).parent / "rio"


Rio = Callable[..., Result]


@pytest.fixture
def rio(tmp_path: Path) -> Rio:
    """``rio(*args)``: the installed console script, with a private cache."""
    assert RIO.is_file(), "the rio console script is not installed (pip install -e .)"

    def run(*args: str) -> Result:
        proc = subprocess.run(
            [os.fspath(RIO), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={"RIO_BASE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
            timeout=120,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def _tree(tmp_path: Path) -> Path:
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("content\n")
    return d


def test_pack_scan_unpack_mirror_with_the_originals_syntax(
    rio: Rio, repeatr: Repeatr, tmp_path: Path
) -> None:
    tree = _tree(tmp_path)
    (tmp_path / "wh").mkdir()
    packed = rio("pack", "tar", "tree", "--target=ca+file://./wh/", "--filters=mtime=@0")
    assert packed.code == 0, packed.stderr
    ware = packed.stdout.strip()
    # The same library code as `repeatr pack`, the same filters (conservative under them).
    assert ware == repeatr("pack", str(tree), "--filter", "mtime=@0").stdout.strip()
    h = ware.split(":", 1)[1]
    stored = tmp_path / "wh" / h[:3] / h[3:6] / h
    assert rio("scan", "tar", f"--source=file://{stored}").stdout == ware + "\n"

    # rioclient's own argument shape: --format=json, flags, then "--" and the positionals.
    res = rio("unpack", "--format=json", "--placer=copy", "--source=ca+file://./wh/", "--", ware, "out")
    assert res.code == 0, res.stderr
    # The ID after the (low-priv) filters, as `repeatr unpack` prints it.
    same = repeatr("unpack", ware, "out-repeatr", "--source", "ca+file://./wh/")
    assert json.loads(res.stdout) == {"result": {"wareID": same.stdout.strip()}}
    assert (tmp_path / "out" / "sub" / "f").read_text() == "content\n"
    assert (tmp_path / "out" / "sub" / "f").stat().st_uid == os.geteuid()  # low-priv default

    (tmp_path / "wh2").mkdir()
    res = rio("mirror", ware, "--target=ca+file://./wh2/", "--source=ca+file://./wh/")
    assert res.code == 0 and res.stdout == ware + "\n", res.stderr
    assert (tmp_path / "wh2" / h[:3] / h[3:6] / h).is_file()

    # --placer=none: into the cache (RIO_BASE, rio's layout), nothing placed.
    res = rio("unpack", ware, "nowhere", "--placer=none", "--source=ca+file://./wh/")
    assert res.code == 0 and res.stdout == ware + "\n", res.stderr
    assert not (tmp_path / "nowhere").exists()
    assert (tmp_path / "cache" / "cache" / "tar" / "fileset" / h[:3] / h[3:6] / h).is_dir()


def test_published_vector_and_errors_as_rio_reported_them(rio: Rio, tmp_path: Path) -> None:
    fixture = FIXTURES / "tar_withBase.tgz"
    res = rio("scan", "tar", f"--source=file://{fixture}", "--format", "json")
    assert res.code == 0, res.stderr
    assert res.stdout == '{"result":{"wareID":"' + WITH_BASE + '"}}\n'
    res = rio("unpack", WITH_BASE, "out", "--format=json", "--source=file:///nonexistent.tgz")
    assert res.code == Category.WARE_NOT_FOUND
    error = json.loads(res.stdout)["result"]["error"]
    assert error["category"] == "rio-ware-not-found" and error["message"]
    bad = rio("pack", "zap", "tree", "--format=json")
    assert bad.code == Category.USAGE
    assert json.loads(bad.stdout)["result"]["error"]["category"] == "rio-usage-error"
    assert rio("frobnicate").code == Category.USAGE
    assert rio("pack", "tar", "tree", "--filters=owner=me").code == Category.USAGE


def test_rio_scan_and_unpack_zip(rio: Rio, tmp_path: Path) -> None:
    from tests.rio import ZIP_WITH_BASE

    fixture = FIXTURES / "zip_withbase.zip"
    assert rio("scan", "zip", f"--source=file://{fixture}").stdout == ZIP_WITH_BASE + "\n"
    res = rio("unpack", ZIP_WITH_BASE, "out", f"--source=file://{fixture}", "--filters=uid=follow,gid=follow")
    assert res.code == 0, res.stderr
    assert res.stdout == ZIP_WITH_BASE + "\n"
    assert rio("pack", "zip", "out").code == Category.USAGE  # we do not write zips
