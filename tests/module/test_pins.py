"""Pinning imports (go-timeless-api funcs/moduleResolvePins_test.go) and building the graph."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import ModuleError
from repeatr.graph.model import Output
from repeatr.module.catalog import CatalogView, WareSourcing
from repeatr.module.layout import Workspace
from repeatr.module.model import IngestRef, load_module_bytes
from repeatr.module.pins import resolve_pins
from repeatr.module.run import load, prepare
from tests.module.workspaces import (
    BUSYBASH,
    make_workspace,
    write_lineage,
    write_mirrors,
    write_module,
)

PINNING = b"""{
    "imports": {
        "base": "catalog:publishing.group/base:v2018:bin-linux-amd64",
        "foo": "ingest:git:.:HEAD",
        "bar": "catalog:publishing.group/bar:v2.0:bin-linux-amd64"
    },
    "steps": {
        "stepA": {"operation": {
            "inputs": {"/": "base", "/foo": "foo", "/bar": "bar"},
            "action": {"exec": ["mv", "/foo/thinger", "/out/thinger"]},
            "outputs": {"intermediate": "/out"}
        }},
        "stepB": {"module": {
            "imports": {
                "base": "catalog:publishing.group/base:v2018:bin-linux-amd64",
                "bar": "catalog:publishing.group/bar:v2.2:bin-linux-amd64",
                "wodget": "parent:stepA.intermediate"
            },
            "steps": {"op": {"operation": {
                "inputs": {"/": "base", "/bar": "bar", "/src": "wodget"},
                "action": {"exec": ["/bar/tool", "/src", "/out/thinger"]},
                "outputs": {"intermediate": "/out"}
            }}},
            "exports": {"barred": "op.intermediate"}
        }},
        "stepC": {"operation": {
            "inputs": {"/": "base", "/bar": "stepB.barred"},
            "action": {"exec": ["/bar/thinger"]},
            "outputs": {"final": "/bar"}
        }}
    },
    "exports": {"src": "foo", "bin-linux-amd64": "stepC.final"}
}"""


def _fake_ingest(ref: IngestRef) -> tuple[str, WareSourcing]:
    # The original's test vector gives its ingest tool as a function; so do we.
    assert ref == IngestRef("git", ".:HEAD")
    return "git:f00f", WareSourcing()


def test_pinning(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_lineage(ws, "publishing.group/base", {"v2018": {"bin-linux-amd64": "tar:asdflkjgh"}})
    write_lineage(
        ws, "publishing.group/bar",
        {"v2.0": {"bin-linux-amd64": "tar:qwer1"}, "v2.2": {"bin-linux-amd64": "tar:qwer2"}},
    )
    mod = load_module_bytes(PINNING, "module.tl")
    pins = resolve_pins(mod, CatalogView(Workspace(ws)), _fake_ingest, "module.tl")
    assert pins.wares == {
        "foo": "git:f00f",
        "base": "tar:asdflkjgh",
        "bar": "tar:qwer1",
        "stepB.base": "tar:asdflkjgh",
        "stepB.bar": "tar:qwer2",
    }
    assert [k for k, _ in pins.sorted_items()] == ["bar", "base", "foo", "stepB.bar", "stepB.base"]


def test_lookup_errors_name_the_import(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_lineage(ws, "a.org/x", {"v1": {"bin": BUSYBASH}})
    view = CatalogView(Workspace(ws))
    cases = {
        "catalog:a.org/x:v2:bin": "no such release 'v2' in lineage 'a.org/x'",
        "catalog:a.org/x:v1:src": "no such item 'src' in release 'a.org/x:v1'",
        "catalog:a.org/nope:v1:bin": "no lineage for module 'a.org/nope'",
        "catalog:a.org/x:v1": "needs a release and an item",
    }
    for ref, message in cases.items():
        mod = load_module_bytes(f'{{"imports": {{"slot": "{ref}"}}}}'.encode(), "m.tl")
        with pytest.raises(ModuleError, match=message) as info:
            resolve_pins(mod, view, _fake_ingest, "m.tl")
        assert str(info.value).startswith("m.tl: import 'slot'")


def test_a_candidate_is_laid_over_the_catalog(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_lineage(ws, "a.org/x", {"v1": {"bin": "tar:old"}})
    view = CatalogView(Workspace(ws))
    view.save_candidate("a.org/x", {"bin": "tar:new"})
    lineage = view.lineage("a.org/x")
    assert [r.name for r in lineage.releases or ()] == ["candidate", "v1"]
    assert lineage.item("candidate", "bin") == "tar:new"
    assert lineage.item("v1", "bin") == "tar:old"
    view.save_candidate("b.org/only", {"e": "tar:cand"})
    assert view.lineage("b.org/only").item("candidate", "e") == "tar:cand"


def test_the_graph_is_what_reach_resolve_made(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    write_lineage(ws, "froob.org/base", {"v1": {"linux-amd64": BUSYBASH}})
    write_mirrors(ws, "froob.org/base", {
        "byModule": {"froob.org/base": {"tar": ["ca+https://mirror.example.invalid/warehouse/"]}},
        "byWare": {BUSYBASH: ["file:///srv/busybash.tgz"]},
    })
    write_module(ws / "a.org" / "m", {
        "imports": {"base": "catalog:froob.org/base:v1:linux-amd64"},
        "steps": {
            "first": {"operation": {
                "inputs": {"/": "base"}, "action": {"exec": ["/bin/true"]},
                "outputs": {"out": "/task/out"},
            }},
            "sub": {"module": {
                "imports": {"img": "parent:base", "thing": "parent:first.out"},
                "steps": {"inner": {"operation": {
                    "inputs": {"/": "img", "/in": "thing"}, "action": {},
                    "outputs": {"o": "/o"},
                }}},
                "exports": {"made": "inner.o", "passed": "img"},
            }},
        },
        "exports": {"final": "sub.made", "base": "sub.passed"},
    })
    prepared = prepare(load(ws / "a.org" / "m"))
    graph = prepared.graph
    staging = f"ca+file://{ws}/.timeless/warehouse"
    assert graph.order == ("first", "sub.inner")
    first = graph.nodes["first"]
    assert first.inputs == {"/": BUSYBASH}
    assert first.outputs == {"/task/out": {"packtype": "tar", "filters": None}}
    assert first.action == {"exec": ["/bin/true"]}
    # byWare, then byPackType (the staging warehouse), then the module's mirrors;
    # sources on this host first.
    assert first.fetch_urls == {"/": (
        "file:///srv/busybash.tgz", staging, "ca+https://mirror.example.invalid/warehouse/",
    )}
    assert first.save_urls == {"/task/out": staging}
    inner = graph.nodes["sub.inner"]
    assert inner.inputs == {"/": BUSYBASH, "/in": Output("first", "/task/out")}
    assert inner.fetch_urls["/in"] == (staging,)
    assert prepared.built.exports == {"final": Output("sub.inner", "/o"), "base": BUSYBASH}
    assert not (ws / ".timeless" / "warehouse").exists(), "prepare stores nothing"
