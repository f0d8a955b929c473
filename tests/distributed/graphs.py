"""The graphs the Dask tests run, and a local run of a graph to compare with.

``twelve_steps``: a diamond and a fan-out, twelve nodes::

    seed -> left, right -> join -> fan1..fan6 -> gather -> final (reads seed too)

Each step writes ``/out``; what it writes depends only on what it reads, so
the same graph gives the same output ware IDs wherever it runs. ``slow``
makes ``join`` sleep first (and carry ``nonce`` in its env, so no memo store
knows it; and a pids limit, so it has a cgroup): its outputs, and all the
others', stay the same.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from repeatr.distributed.client import with_warehouse
from repeatr.graph.model import Graph, Input, Node, NodeResult, Output, formula_file
from repeatr.runner.run import RunOptions, run_sync

OUT = {"/out": {"packtype": "tar"}}


def step(name: str, base: str, script: str, reads: Mapping[str, Input] | None = None,
         **action: Any) -> Node:
    return Node(
        name=name,
        inputs={"/": base, **(reads or {})},
        action={"exec": ["/bin/sh", "-c", script], "userinfo": {"uid": 0, "gid": 0}, **action},
        outputs=OUT,
    )


def twelve_steps(base: str, *, slow: float = 0.0, nonce: str = "") -> Graph:
    join_script = "cat /l/left /r/right > /out/join"
    join_action: dict[str, Any] = {}
    if slow:
        join_script = f"sleep {slow}; {join_script}"
        join_action["env"] = {"NONCE": nonce}
        join_action["limits"] = {"pids": 64}  # a cgroup of its own, to be cleaned up
    nodes = [
        step("seed", base, "mkdir -p /out && echo seed > /out/seed"),
        step("left", base, "mkdir -p /out && tr e E < /in/seed > /out/left",
             {"/in": Output("seed", "/out")}),
        step("right", base, "mkdir -p /out && sed s/s/S/ /in/seed > /out/right",
             {"/in": Output("seed", "/out")}),
        step("join", base, f"mkdir -p /out && {join_script}",
             {"/l": Output("left", "/out"), "/r": Output("right", "/out")}, **join_action),
        *(
            step(f"fan{n}", base, f"mkdir -p /out && (cat /in/join; echo {n}) > /out/fan{n}",
                 {"/in": Output("join", "/out")})
            for n in range(1, 7)
        ),
        step("gather", base, "mkdir -p /out && cat /f*/fan* > /out/all",
             {f"/f{n}": Output(f"fan{n}", "/out") for n in range(1, 7)}),
        step("final", base, "mkdir -p /out && cat /a/all /s/seed | wc -c > /out/size",
             {"/a": Output("gather", "/out"), "/s": Output("seed", "/out")}),
    ]
    return Graph({n.name: n for n in nodes}, tuple(n.name for n in nodes))


def run_locally(graph: Graph, base_source: str, work: Path) -> dict[str, NodeResult]:
    """Every node run in order on this host with repeatr's runner: its outputs saved to
    a ``ca+file://`` warehouse under ``work`` for the nodes that read them, the
    pinned inputs fetched from there or from ``base_source``."""
    done: dict[str, NodeResult] = {}
    (work / "warehouse").mkdir(parents=True)
    (work / "files").mkdir()
    warehouse = f"ca+file://{work}/warehouse/"
    for name in graph.order:
        node = graph.nodes[name]
        node = replace(node, fetch_urls=dict.fromkeys(node.inputs, (base_source,)))
        path = work / "files" / f"{name}.json"
        path.write_bytes(formula_file(with_warehouse(node, warehouse), done))
        result = run_sync(str(path), RunOptions(state=work / "state"))
        assert result.exit_code == 0, (name, result.record_json)
        results = json.loads(result.record_json)["results"]
        done[name] = NodeResult(name, 0, results, result.record_json, result.memo_hit)
    return done


def ware_ids(results: Mapping[str, NodeResult]) -> dict[str, dict[str, str]]:
    return {name: dict(r.results) for name, r in sorted(results.items())}
