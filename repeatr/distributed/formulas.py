"""A batch of formula files as a flat graph: one node per file, no edges.

``repeatr run --dask F1 F2 …`` runs them as a graph (the runner of a graph
does not care that nothing links its nodes). A formula file's inputs are
all pinned (ware IDs); its action and outputs are copied as written, so the
node's formula file (:func:`repeatr.graph.model.formula_file`) has the same
formula ID. A file that cannot be read or is not a valid formula is not a
node: it is returned with its error, for the caller to report as a batch
does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from repeatr.errors import RepeatrError
from repeatr.graph.model import Graph, Node


@dataclass(frozen=True)
class FlatGraph:
    """The graph of the files that could be read, and the errors of the others."""

    graph: Graph
    #: Node name -> the formula file it came from.
    files: dict[str, str]
    #: (file, error) for each file that is not a node, in the order given.
    errors: list[tuple[str, RepeatrError]]


def read_node(path: str, name: str) -> Node:
    """The formula file at ``path`` as a node named ``name``; ``FormulaError`` if it is not one."""
    from repeatr.model.formula import load_formula_bytes, read_formula_file

    data = read_formula_file(path)
    loaded = load_formula_bytes(data, path)  # validates; raises FormulaError naming the file
    raw = json.loads(data)["formula"]
    context = loaded.context
    return Node(
        name=name,
        inputs=dict(loaded.formula.inputs or {}),
        action=dict(raw.get("action") or {}),
        outputs=dict(raw.get("outputs") or {}),
        fetch_urls=dict(context.fetch_urls) if context is not None else {},
        save_urls=dict(context.save_urls) if context is not None else {},
        origin=path,
    )


def flat_graph(paths: Sequence[str]) -> FlatGraph:
    """One node per readable, valid formula file, named by its path (``path (2)`` if repeated)."""
    nodes: dict[str, Node] = {}
    files: dict[str, str] = {}
    errors: list[tuple[str, RepeatrError]] = []
    for path in paths:
        name, n = path, 1
        while name in nodes:
            n += 1
            name = f"{path} ({n})"
        try:
            nodes[name] = read_node(path, name)
        except RepeatrError as err:
            errors.append((path, err))
            continue
        files[name] = path
    return FlatGraph(Graph(nodes, tuple(nodes)), files, errors)
