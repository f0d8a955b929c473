"""The commands' errors, plan and graph output, and the catalog's show and release."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from repeatr.errors import Category
from tests.module.conftest import Scratch
from tests.module.workspaces import BUSYBASH, write_module

pytestmark = pytest.mark.root

HELLO = "tar:89LoLzgAYkndYpNQC7H94eR6tU6F4EWy2yFGouDCQz1cx9JpYmEPyDm2YWwYTGDvPv"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ('{"steps": {"a": {"operation": {"inputs": {"/": "nope"}}}}}', ["step 'a'", "'nope'"]),
        ('{"stepz": {}}', ["stepz", "unknown key"]),
        ('{"imports": {"x": "catalog:Not..Valid:v1:i"}}', ['imports["x"]', "moduleName"]),
        (
            '{"steps": {"a": {"operation": {"inputs": {"/": "b.o"}, "outputs": {"o": "/o"}}},'
            ' "b": {"operation": {"inputs": {"/": "a.o"}, "outputs": {"o": "/o"}}}}}',
            ["not a dag: loop detected at 'a'"],
        ),
        ('{"steps": {}, "exports": {"e": "gone.x"}}', ["export 'e'", "'gone'"]),
        ('{"steps": {"a": {"operation": {}}}', ["module.tl"]),
    ],
)
def test_validation_errors_before_anything_runs(
    scratch: Scratch, module: str, names: list[str]
) -> None:
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    write_module(ws / "m.org/x", module)
    for command in ("run", "plan", "graph"):
        done = scratch.repeatr(ws / "m.org/x", "module", command)
        assert done.code == Category.USAGE, done.stderr
        assert str(ws / "m.org/x/module.tl") in done.stderr
        for name in names:
            assert name in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in (ws / ".timeless").iterdir()) == []  # nothing made
    assert not (scratch.state / "runs").exists() or not list((scratch.state / "runs").iterdir())


def test_a_module_path_that_is_not_a_module_name(scratch: Scratch) -> None:
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    write_module(ws / "Bad_Name", '{"steps": {}}')
    done = scratch.repeatr(ws / "Bad_Name", "module", "run")
    assert done.code == Category.USAGE
    assert "'Bad_Name'" in done.stderr
    assert "not a valid module name" in done.stderr


def test_no_workspace(scratch: Scratch) -> None:
    done = scratch.repeatr(scratch.base, "module", "plan")
    assert done.code == Category.USAGE
    assert "no workspace found" in done.stderr


def test_plan_and_graph_of_recursivemodule(scratch: Scratch) -> None:
    ws = scratch.example("recursivemodule")
    plan = scratch.repeatr(ws, "module", "plan")
    assert plan.code == 0, plan.stderr
    assert plan.stdout.splitlines()[1:8] == [
        "5 steps, in order:",
        "  01: step-first  run (not run before)",
        "  02: submodule-jamboree  module",
        "  03: submodule-jamboree.bap  run (not run before)",
        "  04: submodule-jamboree.boop  run (reads step-first (not memoized))",
        "  05: step-after  run (reads submodule-jamboree.bap, submodule-jamboree.boop"
        " (not memoized))",
        "imports pinned to hashes:",
    ]
    assert f'  "submodule-jamboree.image": {BUSYBASH}' in plan.stdout

    text = scratch.repeatr(ws, "module", "graph")
    assert "    /task/thingy <- step-first /task/out" in text.stdout.splitlines()
    mermaid = scratch.repeatr(ws, "module", "graph", "--format", "mermaid")
    lines = mermaid.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    assert '    s0 -->|"/task/thingy"| s2' in lines
    assert "    s3 --> e0" in lines
    dot = scratch.repeatr(ws, "module", "graph", "--format", "dot")
    assert dot.stdout.startswith("digraph module {")
    assert 's0 -> s2 [label="/task/thingy"];' in dot.stdout
    assert shutil.which("dot"), "Graphviz's dot is missing: scripts/setup installs it"
    svg = subprocess.run(
        ["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True, check=True
    )
    assert "<svg" in svg.stdout and "jamboree.boop" in svg.stdout
    as_json = scratch.repeatr(ws, "--format", "json", "module", "graph", "--format", "mermaid")
    assert as_json.events()[0]["graph"] == mermaid.stdout.rstrip("\n")


def test_catalog_show_and_release(scratch: Scratch) -> None:
    ws = scratch.example("helloworkspace")
    show = scratch.repeatr(ws, "catalog", "show", "froob.org/base:v1:linux-amd64")
    assert (show.code, show.stdout) == (0, f"{BUSYBASH}\n")
    lineage = scratch.repeatr(ws, "catalog", "show", "example.org/proj-foo")
    assert [r["name"] for r in json.loads(lineage.stdout)["releases"]] == ["v0.01"]
    missing = scratch.repeatr(ws, "catalog", "show", "example.org/proj-foo:v9")
    assert missing.code == Category.USAGE
    assert "no such release 'v9' in lineage 'example.org/proj-foo'" in missing.stderr

    foo = ws / "example.org/proj-foo"
    early = scratch.repeatr(foo, "catalog", "release", "v0.02")
    assert early.code == Category.USAGE
    assert "no candidate release" in early.stderr
    assert scratch.repeatr(foo, "module", "run", "--executor", "ns").code == 0

    release = scratch.repeatr(foo, "catalog", "release", "v0.02", "--meta", "by=test")
    assert release.code == 0, release.stderr
    assert release.stdout == "example.org/proj-foo:v0.02\n"
    shown = json.loads(scratch.repeatr(ws, "catalog", "show", "example.org/proj-foo").stdout)
    assert [r["name"] for r in shown["releases"]] == ["candidate", "v0.02", "v0.01"]
    assert shown["releases"][1]["items"] == {"wowslot": HELLO}
    assert shown["releases"][1]["metadata"] == {"by": "test"}
    item = scratch.repeatr(ws, "catalog", "show", "example.org/proj-foo:v0.02:wowslot")
    assert item.stdout == f"{HELLO}\n"

    lineage_file = ws / ".timeless/catalog/example.org/proj-foo/lineage.tl"
    before = lineage_file.read_bytes()
    for name in ("v0.02", "v0.01", "candidate"):
        again = scratch.repeatr(
            ws, "catalog", "release", name, "--module", "example.org/proj-foo"
        )
        assert again.code == Category.USAGE, name
        assert lineage_file.read_bytes() == before
    assert "already has a release named 'v0.02'" in scratch.repeatr(
        foo, "catalog", "release", "v0.02"
    ).stderr


def test_help_teaches(scratch: Scratch) -> None:
    for args in (("module", "run"), ("module", "plan"), ("module", "graph"),
                 ("catalog", "show"), ("catalog", "release")):
        done = scratch.repeatr(Path("/"), *args, "--help")
        assert done.code == 0, done.stderr
        assert "usage: repeatr" in done.stdout
    assert "catalog:MODULE:candidate:ITEM" in scratch.repeatr(
        Path("/"), "module", "run", "--help"
    ).stdout


def test_a_failed_lookup_or_a_bad_target_leaves_nothing(scratch: Scratch) -> None:
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    write_module(ws, {
        "imports": {"base": "catalog:example.org/none:v1:x"},
        "steps": {"s": {"operation": {"inputs": {"/": "base"}, "action": {}}}},
    })
    lookup = scratch.repeatr(ws, "module", "run")
    assert lookup.code == Category.USAGE
    assert "no lineage for module 'example.org/none'" in lookup.stderr
    write_module(ws, {"imports": {"base": f"ingest:literal:{BUSYBASH}"}, "steps": {}})
    target = scratch.repeatr(ws, "module", "run", "--target", "nope://somewhere")
    assert target.code == Category.USAGE
    assert "nope://somewhere" in target.stderr
    assert sorted(p.name for p in (ws / ".timeless").iterdir()) == []
