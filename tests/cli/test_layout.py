"""The CLI's modules stand alone: what they share lives in the library (``repeatr.runner``)."""

from __future__ import annotations

import ast
from pathlib import Path

import repeatr.cli

CLI = Path(repeatr.cli.__file__).parent


def test_no_cli_module_imports_another_cli_modules_private_names() -> None:
    found = []
    for path in sorted(CLI.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("repeatr.cli"):
                found += [
                    f"{path.name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_")
                ]
    assert found == []


def test_commands_that_run_formulas_use_the_runner() -> None:
    for name in ("run_cmds", "check_cmds", "twerk_cmds", "explain_cmds"):
        source = (CLI / f"{name}.py").read_text()
        assert "repeatr.runner" in source, name
        assert "repeatr.cli.run_cmds" not in source, name
