"""Finding the workspace and the module, and naming the module, as reach did."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category, FormulaError, ModuleError
from repeatr.module.catalog import CatalogTree
from repeatr.module.layout import expect_module, find_module, find_workspace, locate
from tests.module.workspaces import make_workspace, write_module


def test_nearest_workspace_and_module(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    write_module(ws / "a.org" / "proj", "{}")
    deep = ws / "a.org" / "proj" / "src" / "deeper"
    deep.mkdir(parents=True)
    found = locate(deep, None)
    assert found.workspace.root == ws
    assert found.root == ws / "a.org" / "proj"
    assert found.name == "a.org/proj"
    assert locate(ws, "a.org/proj").root == found.root
    assert locate(ws, "a.org/proj/module.tl").root == found.root


def test_a_module_at_the_root_is_unnamed(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    write_module(ws, "{}")
    assert find_module(find_workspace(ws / "."), ws).name == "unnamed"


def test_what_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="no workspace found") as info:
        find_workspace(tmp_path)
    assert info.value.category is Category.USAGE
    ws = make_workspace(tmp_path / "ws")
    (ws / "empty").mkdir()
    with pytest.raises(ModuleError, match="no module found"):
        find_module(find_workspace(ws), ws / "empty")
    # A path names the module exactly: no search upwards.
    write_module(ws / "m", "{}")
    (ws / "m" / "sub").mkdir()
    with pytest.raises(ModuleError, match="no module found"):
        expect_module(find_workspace(ws), ws / "m" / "sub")
    with pytest.raises(ModuleError, match="contained within a workspace root"):
        expect_module(find_workspace(ws), tmp_path)


def test_a_module_whose_path_is_no_module_name(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    write_module(ws / "a.org" / "Upper", "{}")
    with pytest.raises(ModuleError, match="not a valid module name"):
        _ = locate(ws / "a.org" / "Upper", None).name


def test_a_bad_lineage_names_its_file(tmp_path: Path) -> None:
    tree = CatalogTree(tmp_path)
    (tmp_path / "a.org").mkdir()
    (tmp_path / "a.org" / "lineage.tl").write_text('{"name": "a.org", "releasez": []}')
    with pytest.raises(FormulaError, match=r"a\.org/lineage\.tl: releasez: unknown key"):
        tree.load_lineage("a.org")
    with pytest.raises(ModuleError, match="not a valid module name"):
        tree.load_lineage("../escape")
