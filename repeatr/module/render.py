"""Pictures of a module's graph: plain text, Graphviz dot, Mermaid.

Imports (pinned wares) are the sources, steps the boxes, exports the sinks;
an edge goes from what a step reads to the step, labelled with the input
path. Steps are listed in the original's order; nested steps keep their
``sub.step`` names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from repeatr.graph.model import Input, Output

if TYPE_CHECKING:
    from repeatr.module.run import Prepared

FORMATS = ("text", "dot", "mermaid")


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    label: str


def _source_of(ware: Input) -> str:
    if isinstance(ware, Output):
        return f"step:{ware.node}"
    return f"ware:{ware}"


def _edges(prepared: Prepared) -> Iterator[_Edge]:
    graph = prepared.graph
    for name in graph.order:
        for path, ware in sorted(graph.nodes[name].inputs.items()):
            yield _Edge(_source_of(ware), f"step:{name}", path)
    for item, ware in sorted(prepared.built.exports.items()):
        yield _Edge(_source_of(ware), f"export:{item}", "")


def _ware_labels(prepared: Prepared) -> dict[str, str]:
    """``ware:<id>`` -> the import names that pinned it (``base``, ``sub.image``)."""
    labels: dict[str, list[str]] = {}
    for key, ware in prepared.pins.sorted_items():
        labels.setdefault(f"ware:{ware}", []).append(key)
    return {k: ", ".join(v) for k, v in labels.items()}


def _short(ware: str) -> str:
    packtype, _, digest = ware.partition(":")
    return f"{packtype}:{digest[:10]}…" if len(digest) > 12 else ware


def _describe(ware: Input) -> str:
    return f"{ware.node} {ware.path}" if isinstance(ware, Output) else ware


def text(prepared: Prepared) -> str:
    graph = prepared.graph
    lines = ["imports:"]
    for key, ware in prepared.pins.sorted_items():
        lines.append(f"  {key} = {ware}")
    lines.append("steps:")
    for name in graph.order:
        node = graph.nodes[name]
        lines.append(f"  {name}")
        for path, source in sorted(node.inputs.items()):
            lines.append(f"    {path} <- {_describe(source)}")
        for path in sorted(node.outputs):
            lines.append(f"    -> {path}")
    lines.append("exports:")
    for item, export in sorted(prepared.built.exports.items()):
        lines.append(f"  {item} <- {_describe(export)}")
    return "\n".join(lines)


def _ids(prepared: Prepared) -> dict[str, str]:
    """Every vertex -> a short identifier safe in dot and mermaid."""
    ids: dict[str, str] = {}
    labels = _ware_labels(prepared)
    for n, key in enumerate(labels):
        ids[key] = f"w{n}"
    for n, name in enumerate(prepared.graph.order):
        ids[f"step:{name}"] = f"s{n}"
    for n, item in enumerate(sorted(prepared.built.exports)):
        ids[f"export:{item}"] = f"e{n}"
    for edge in _edges(prepared):  # a ware only an export names (an ingest passed through)
        ids.setdefault(edge.source, f"w{len(ids)}")
    return ids


def _label(vertex: str, labels: dict[str, str]) -> str:
    kind, _, rest = vertex.partition(":")
    if kind == "ware":
        return f"{labels[vertex]}\n{_short(rest)}" if vertex in labels else _short(rest)
    if kind == "export":
        return f"export {rest}"
    return rest


def dot(prepared: Prepared) -> str:
    ids = _ids(prepared)
    labels = _ware_labels(prepared)
    lines = ["digraph module {", "\trankdir=LR;", '\tnode [fontname="sans-serif"];']
    for vertex, ident in ids.items():
        shape = {"ware": "cylinder", "step": "box", "export": "note"}[vertex.partition(":")[0]]
        lines.append(f"\t{ident} [shape={shape}, label={json.dumps(_label(vertex, labels))}];")
    for edge in _edges(prepared):
        attrs = f" [label={json.dumps(edge.label)}]" if edge.label else ""
        lines.append(f"\t{ids[edge.source]} -> {ids[edge.target]}{attrs};")
    lines.append("}")
    return "\n".join(lines)


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def mermaid(prepared: Prepared) -> str:
    ids = _ids(prepared)
    labels = _ware_labels(prepared)
    lines = ["flowchart LR"]
    for vertex, ident in ids.items():
        label = _mermaid_text(_label(vertex, labels))
        kind = vertex.partition(":")[0]
        shape = {"ware": f'[("{label}")]', "step": f'["{label}"]', "export": f'[/"{label}"/]'}[kind]
        lines.append(f"    {ident}{shape}")
    for edge in _edges(prepared):
        arrow = f'-->|"{_mermaid_text(edge.label)}"|' if edge.label else "-->"
        lines.append(f"    {ids[edge.source]} {arrow} {ids[edge.target]}")
    return "\n".join(lines)


def render(prepared: Prepared, fmt: str) -> str:
    if fmt == "dot":
        return dot(prepared)
    if fmt == "mermaid":
        return mermaid(prepared)
    return text(prepared)
