"""``repeatr import`` through the real command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repeatr.errors import Category
from repeatr.fileset.pack import pack_dir
from repeatr.imports import import_source
from repeatr.model.filters import PACK_FLATTEN, Filters

from .images import blob_path, layers_of, make_rootfs, set_times

pytestmark = pytest.mark.root


def repeatr(
    *args: str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repeatr", *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"REPEATR_CACHE": str(cwd / "cache"), "PATH": "/usr/bin:/bin"},
        encoding="latin-1",
        timeout=120,
        check=False,
    )


def test_import_oci_to_warehouse(layered: Path, tmp_path: Path) -> None:
    expected = import_source(f"oci:{layered}:base", workdir=tmp_path)
    (tmp_path / "wh").mkdir()
    (tmp_path / "work").mkdir()
    res = repeatr(
        "import", f"oci:{layered}:base", "--target", "ca+file://./wh/",
        "--workdir", "work", cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(expected)
    assert "layer 4/4" in res.stderr  # progress names each layer
    h = expected.hash
    stored = tmp_path / "wh" / h[:3] / h[3:6] / h
    assert repeatr("scan", str(stored), cwd=tmp_path).stdout.strip() == str(expected)
    assert os.listdir(tmp_path / "work") == []


def test_import_filter_and_exit_codes(layered: Path, tmp_path: Path) -> None:
    res = repeatr("import", f"oci:{layered}:base", "--filter", "flatten", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(
        import_source(f"oci:{layered}:base", filters=PACK_FLATTEN, workdir=tmp_path)
    )
    assert repeatr("import", f"oci:{layered}:nope", cwd=tmp_path).returncode == (
        Category.WARE_NOT_FOUND
    )
    layout = tmp_path / "layout"
    shutil.copytree(layered, layout, symlinks=True)
    blob = blob_path(layout, layers_of(layout, "base")[3]["digest"])
    blob.write_bytes(blob.read_bytes()[:-1] + b"\1")
    res = repeatr("import", f"oci:{layout}:base", cwd=tmp_path)
    assert res.returncode == Category.HASH_MISMATCH, res.stderr


def test_import_export_from_stdin(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    make_rootfs(root)
    set_times(root)
    export = subprocess.run(
        ["tar", "-C", os.fspath(root), "--numeric-owner", "-cf", "-", "."],
        check=True, capture_output=True,
    ).stdout
    res = repeatr("import", "-", cwd=tmp_path, stdin=export)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(pack_dir(root, None, filters=Filters()))
