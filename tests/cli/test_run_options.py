"""``run`` and ``module run`` take the same run options and build the same ``RunOptions``."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.cli.main import build_parser
from repeatr.cli.options import run_options

RUN_OPTIONS = ["-e", "chroot", "--no-memo", "--bridge", "rb7", "--subnet", "10.77.0.0/24"]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", *RUN_OPTIONS, "f.json"],
        ["module", "run", *RUN_OPTIONS],
    ],
)
def test_run_and_module_run_take_the_same_run_options(argv: list[str], tmp_path: Path) -> None:
    args = build_parser(argv).parse_args(["--cache", str(tmp_path), *argv])
    options = run_options(args)
    assert (options.state, options.executor, options.use_memo) == (tmp_path, "chroot", False)
    assert (options.bridge, options.subnet) == ("rb7", "10.77.0.0/24")


@pytest.mark.parametrize("argv", [["run", "f.json"], ["module", "run"]])
def test_bridge_and_subnet_default_to_the_environment(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPEATR_BRIDGE", "envbr0")
    monkeypatch.setenv("REPEATR_SUBNET", "10.88.0.0/16")
    options = run_options(build_parser(argv).parse_args(argv))
    assert (options.bridge, options.subnet) == ("envbr0", "10.88.0.0/16")
    assert options.use_memo and options.executor == "auto"


def test_module_plan_asks_the_memo_store(tmp_path: Path) -> None:
    argv = ["module", "plan", "-e", "ns"]
    options = run_options(build_parser(argv).parse_args(argv))
    assert options.use_memo and options.executor == "ns" and options.output_dir is None
