"""The graph's own rules: order, what a node needs, its formula file filled in."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from repeatr.errors import Category, UsageError
from repeatr.graph.model import Graph, Node, NodeResult, Output, formula_file
from repeatr.model.base58 import b58encode

BASE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"
#: Two more well-formed ware IDs (a result must be one to become an input).
WARE_B = "tar:" + b58encode(hashlib.sha384(b"b").digest())
WARE_C = "tar:" + b58encode(hashlib.sha384(b"c").digest())


def node(name: str, **inputs: str | Output) -> Node:
    return Node(
        name,
        {"/": BASE, **{f"/in/{k}": v for k, v in inputs.items()}},
        {"exec": ["/bin/true"]},
        {"/out": {"packtype": "tar", "filters": None}},
        fetch_urls={"/": ("ca+file:///ws/.timeless/warehouse",)},
        save_urls={"/out": "ca+file:///ws/.timeless/warehouse"},
        origin=f'module.tl: step "{name}"',
    )


def diamond() -> Graph:
    a = node("a")
    b = node("b", x=Output("a", "/out"))
    c = node("c", x=Output("a", "/out"))
    d = node("d", x=Output("b", "/out"), y=Output("c", "/out"))
    e = node("e")
    return Graph({n.name: n for n in (a, b, c, d, e)}, ("a", "b", "c", "d", "e"))


def test_needs_and_dependents() -> None:
    g = diamond()
    assert g.nodes["d"].needs == {"b", "c"}
    assert g.nodes["a"].needs == frozenset()
    assert g.dependents("a") == ["b", "c", "d"]
    assert g.dependents("b") == ["d"]
    assert g.dependents("e") == []


def test_order_must_put_needs_first() -> None:
    g = diamond()
    with pytest.raises(UsageError, match="before") as err:
        Graph(g.nodes, ("b", "a", "c", "d", "e"))
    assert err.value.category is Category.USAGE


def test_order_must_name_every_node_once() -> None:
    g = diamond()
    with pytest.raises(UsageError, match="exactly once"):
        Graph(g.nodes, ("a", "b", "c", "d"))
    with pytest.raises(UsageError, match="exactly once"):
        Graph(g.nodes, ("a", "a", "b", "c", "d", "e"))


def test_unknown_step_named_with_its_origin() -> None:
    lone = node("b", x=Output("nope", "/out"))
    with pytest.raises(UsageError, match=r'module.tl: step "b".*nope'):
        Graph({"b": lone}, ("b",))


def test_formula_file_pins_outputs_of_needed_nodes() -> None:
    g = diamond()
    done = {
        "b": NodeResult("b", 0, {"/out": WARE_B}, b"{}"),
        "c": NodeResult("c", 0, {"/out": WARE_C}, b"{}"),
    }
    parsed = json.loads(formula_file(g.nodes["d"], done))
    assert parsed["formula"]["inputs"] == {"/": BASE, "/in/x": WARE_B, "/in/y": WARE_C}
    assert parsed["formula"]["outputs"] == {"/out": {"packtype": "tar", "filters": None}}
    assert parsed["context"] == {
        "fetchUrls": {"/": ["ca+file:///ws/.timeless/warehouse"]},
        "saveUrls": {"/out": "ca+file:///ws/.timeless/warehouse"},
    }


def test_formula_file_names_a_missing_output() -> None:
    g = diamond()
    done = {"a": NodeResult("a", 0, {"/other": "tar:aaa"}, b"{}")}
    with pytest.raises(UsageError, match=r'step "b".*\'a\' has no output \'/out\''):
        formula_file(g.nodes["b"], done)


def test_a_graph_survives_pickle() -> None:
    # Dask ships nodes to workers by pickle.
    g = diamond()
    again = pickle.loads(pickle.dumps(g))
    assert again == g
    assert formula_file(again.nodes["a"], {}) == formula_file(g.nodes["a"], {})
