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
    real_decode = run_mod.msgspec.json.decode

    def swap_then_decode(data: Any, **kw: Any) -> Any:
        # After repeatr made the directory, a neighbour swaps it for a symlink.
        if out.is_dir() and not out.is_symlink():
            out.rename(moved)
            out.symlink_to(elsewhere)
        return real_decode(data, **kw)

    monkeypatch.setattr(run_mod.msgspec.json, "decode", swap_then_decode)
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


# ------------------------------------------------------------ the formula file

WARE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"


def _formula(word: str) -> bytes:
    return json.dumps(
        {"formula": {"inputs": {"/": WARE}, "action": {"exec": ["/bin/echo", word]}}}
    ).encode()


def _options(tmp_path: Path) -> run_mod.RunOptions:
    return run_mod.RunOptions(state=tmp_path / "state")


def test_formula_swapped_between_reads_gives_one_formula(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file swapped after the memo lookup must not be the formula that runs,
    or its record would be stored under the other file's key (memo poisoning)."""
    from repeatr.memo import MemoStore, bytes_key

    path = tmp_path / "f.json"
    path.write_bytes(_formula("first"))
    real_get = MemoStore.get

    def get_then_swap(self: MemoStore, key: str) -> bytes | None:
        path.write_bytes(_formula("second"))  # a neighbour's write lands here
        return real_get(self, key)

    monkeypatch.setattr(MemoStore, "get", get_then_swap)
    prepared = run_mod.prepare(os.fspath(path), _options(tmp_path), run_mod.RunnerEvents())
    assert prepared.loaded is not None
    word = prepared.loaded.formula.action.exec[-1]
    assert bytes_key(_formula(word), "auto") in prepared.keys
    assert word == "first"


def test_formula_from_a_fifo_is_read_once(tmp_path: Path) -> None:
    """A FIFO is read once, when its writer comes (as ``cat`` waits for it),
    and its bytes are both the formula and its key by file."""
    import threading
    import time

    from repeatr.memo import bytes_key

    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)

    def writer() -> None:
        time.sleep(0.2)
        with open(fifo, "wb") as f:
            f.write(_formula("first"))

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    prepared = run_mod.prepare(os.fspath(fifo), _options(tmp_path), run_mod.RunnerEvents())
    t.join(5)
    assert prepared.loaded is not None
    assert prepared.loaded.formula.action.exec[-1] == "first"
    assert bytes_key(_formula("first"), "auto") in prepared.keys


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "/"])
def test_formula_that_is_not_a_file_or_pipe_is_refused(path: str) -> None:
    from repeatr.errors import Category, FormulaError
    from repeatr.model.formula import read_formula_file

    with pytest.raises(FormulaError) as err:
        read_formula_file(path)
    assert err.value.category is Category.USAGE
    assert "not a regular file or a pipe" in str(err.value)
