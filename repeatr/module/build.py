"""From a checked, pinned module to a :class:`repeatr.graph.model.Graph`.

Nested modules are flattened: an operation ``boop`` of module step ``sub``
is the node ``sub.boop``. Each node's formula is what reach's
``operation.Resolve`` made of its operation:

* inputs: path -> the ware in scope (a pin, a ``parent:`` import, or an
  :class:`~repeatr.graph.model.Output` of an earlier node);
* the action, as written;
* each output ``{"packtype": "tar", "filters": null}`` (repeatr packs it
  with the flatten filters);
* fetch URLs per input path: byWare[ware] ++ byPackType[its type] (reach's
  ``PivotToInputs``), where byPackType ``tar`` is the staging warehouse; a
  node's output read by another is a tar fetched from staging. One change
  from reach: sources on this host (``file://``, ``ca+file://``) come before
  remote ones, so a ware the workspace already holds is never downloaded;
* save URLs: every output to the staging warehouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec

from repeatr.graph.model import Graph, Input, Node, Output
from repeatr.module.catalog import WareSourcing
from repeatr.module.model import Module, Operation, ParentRef, SlotRef
from repeatr.module.pins import Pins

#: An operation's output spec, as reach's Resolve wrote it.
OUTPUT_SPEC: Mapping[str, object] = {"packtype": "tar", "filters": None}
_LOCAL = ("file", "ca+file", "")


def local_first(urls: list[str]) -> tuple[str, ...]:
    """``urls`` with the ones on this host first, each group in its own order, no repeats."""
    unique = list(dict.fromkeys(urls))
    return tuple(
        [u for u in unique if urlsplit(u).scheme in _LOCAL]
        + [u for u in unique if urlsplit(u).scheme not in _LOCAL]
    )


@dataclass(frozen=True)
class Built:
    graph: Graph
    #: Top-level export item -> its ware (pinned) or the node output it is.
    exports: Mapping[str, Input]


def _action(op: Operation) -> dict[str, object]:
    # Through JSON: plain lists and dicts, as the formula file will hold them.
    raw = msgspec.json.decode(msgspec.json.encode(op.action))
    assert isinstance(raw, dict)
    return raw


def build_graph(
    mod: Module,
    order: list[str],
    pins: Pins,
    sourcing: WareSourcing,
    staging: str,
    file: str,
) -> Built:
    """The graph of ``mod``; ``order`` is its deep order (``order_deep``), already checked."""
    nodes: dict[str, Node] = {}
    node_order: list[str] = []

    def fetch_urls(ware: Input) -> tuple[str, ...]:
        if isinstance(ware, Output):
            return local_first(sourcing.by_packtype.get("tar", []))
        return local_first(sourcing.for_ware(ware))

    def evaluate(m: Module, ctx: str, parent_scope: Mapping[SlotRef, Input]) -> dict[str, Input]:
        scope: dict[SlotRef, Input] = {}
        for slot, ref in (m.imports or {}).items():
            if isinstance(ref, ParentRef):
                scope[SlotRef("", slot)] = parent_scope[ref.ref]
            else:
                scope[SlotRef("", slot)] = pins.wares[f"{ctx}.{slot}" if ctx else slot]
        prefix = f"{ctx}." if ctx else ""
        mine = [
            n[len(prefix) :] for n in order if n.startswith(prefix) and "." not in n[len(prefix) :]
        ]
        for name in mine:
            step = (m.steps or {})[name]
            full = prefix + name
            if isinstance(step, Module):
                exported = evaluate(step, full, scope)
                for item, ware in exported.items():
                    scope[SlotRef(name, item)] = ware
                continue
            inputs = {path: scope[ref] for path, ref in (step.inputs or {}).items()}
            node = Node(
                name=full,
                inputs=inputs,
                action=_action(step),
                outputs={path: dict(OUTPUT_SPEC) for path in step.outputs.values()},
                fetch_urls={path: fetch_urls(ware) for path, ware in inputs.items()},
                save_urls={path: staging for path in step.outputs.values()},
                origin=f"{file}: step {full!r}",
            )
            nodes[full] = node
            node_order.append(full)
            for slot, path in step.outputs.items():
                scope[SlotRef(name, slot)] = Output(full, path)
        return {item: scope[ref] for item, ref in m.exports.items()}

    exports = evaluate(mod, "", {})
    return Built(Graph(nodes=nodes, order=tuple(node_order)), exports)
