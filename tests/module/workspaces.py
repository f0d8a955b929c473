"""Workspaces for module tests: a .timeless/ with catalog lineages, written as the original's."""

from __future__ import annotations

import json
from pathlib import Path

BUSYBASH = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"


def write_lineage(ws: Path, module: str, releases: dict[str, dict[str, str]]) -> None:
    """``releases``: name -> items, newest first."""
    d = ws / ".timeless" / "catalog" / module
    d.mkdir(parents=True, exist_ok=True)
    doc = {
        "name": module,
        "releases": [
            {"name": n, "items": items, "metadata": None, "hazards": None}
            for n, items in releases.items()
        ],
    }
    (d / "lineage.tl").write_text(json.dumps(doc, indent="\t") + "\n")


def write_mirrors(ws: Path, module: str, doc: dict[str, object]) -> None:
    d = ws / ".timeless" / "catalog" / module
    d.mkdir(parents=True, exist_ok=True)
    (d / "mirrors.tl").write_text(json.dumps(doc, indent="\t") + "\n")


def make_workspace(root: Path) -> Path:
    (root / ".timeless").mkdir(parents=True)
    return root


def write_module(directory: Path, doc: dict[str, object] | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = doc if isinstance(doc, str) else json.dumps(doc, indent="\t")
    (directory / "module.tl").write_text(text)
    return directory
