"""What repeatr (as root) writes and reads on the host for its invoker, against a neighbour.

``--output-dir`` may be in a tree another local user can write (a shared
build dir): a symlink planted at a temp file's name, or swapped in for the
directory while the run writes, must not redirect a root write; an
interrupted write leaves no temp file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from repeatr.runner import run as run_mod

RECORD = json.dumps(
    {"results": {"/out": "tar:abc"}, "exitCode": 0}, separators=(",", ":")
).encode()


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    return victim


def test_output_dir_temp_name_is_not_a_planted_symlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    # Every name a predictable scheme would use (pid-based, as before).
    for name in ("_out.ware_id", "record.json"):
        for pid in (os.getpid(), os.getppid()):
            (out / f".{name}.{pid}.tmp").symlink_to(victim)
    run_mod.write_output_dir(out, RECORD)
    assert victim.read_text() == "precious\n"
    assert (out / "_out.ware_id").read_text() == "tar:abc\n"
    assert json.loads((out / "record.json").read_bytes())["exitCode"] == 0


def test_output_dir_swapped_for_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"  # stands for /etc
    elsewhere.mkdir()
    moved = tmp_path / "moved"
    real_loads = json.loads

    def swap_then_loads(data: Any, **kw: Any) -> Any:
        # After repeatr made the directory, a neighbour swaps it for a symlink.
        if out.is_dir() and not out.is_symlink():
            out.rename(moved)
            out.symlink_to(elsewhere)
        return real_loads(data, **kw)

    monkeypatch.setattr(run_mod.json, "loads", swap_then_loads)
    run_mod.write_output_dir(out, RECORD)
    monkeypatch.undo()
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in moved.iterdir()) == ["_out.ware_id", "record.json"]


def test_output_dir_interrupted_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"

    def interrupted(*args: Any, **kw: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_mod.write_output_dir(out, RECORD)
    monkeypatch.undo()
    assert list(out.iterdir()) == []


def test_output_dir_planted_symlink_at_a_final_name_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / "record.json").symlink_to(victim)
    (out / "_out.ware_id").symlink_to(victim)
    run_mod.write_output_dir(out, RECORD)
    assert victim.read_text() == "precious\n"
    assert not (out / "record.json").is_symlink()
    assert (out / "_out.ware_id").read_text() == "tar:abc\n"
