"""docs/cli.md is the real `repeatr COMMAND --help` of every command, not a stale copy."""

from __future__ import annotations

import subprocess
import sys

from tests.rootfs import REPO


def test_cli_reference_is_current() -> None:
    proc = subprocess.run(
        [sys.executable, REPO / "scripts" / "docs", "cli", "--check"],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + "(regenerate: .venv/bin/python scripts/docs cli)"


def test_cli_reference_has_every_command() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    for command in ("run", "gc", "scan", "pack", "unpack", "mirror", "import", "formula id",
                    "cache ls", "cache gc", "cache verify", "doctor", "completion", "check"):
        assert f"\n## repeatr {command}\n" in text, command
    for command in ("pack", "unpack", "scan", "mirror"):
        assert f"\n## rio {command}\n" in text, command
