"""A module, from its directory to its exports: load, pin, build, plan, run.

What ``repeatr module run`` does, step by step (reach's ``emerge``):

1. :func:`load`: find the workspace and the module, parse ``module.tl``,
   check every reference and order the steps. Every problem is found here,
   before anything runs or is fetched.
2. :func:`prepare`: pin the imports (catalog lookups, ingests) and build
   the :class:`~repeatr.graph.model.Graph`.
3. :func:`plan` (``module plan``) asks the memo store which steps would not
   run; :func:`run_module` runs the graph (``repeatr.graph.local.run_graph``:
   independent steps at once), then copies the outputs to any ``--target``
   warehouse and records the exports as the module's ``candidate`` release.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from repeatr.errors import ModuleError
from repeatr.graph.model import Graph, Input, NodeResult, Output, formula_file
from repeatr.module import layout as layout_mod
from repeatr.module.build import Built, build_graph
from repeatr.module.catalog import CatalogView, WareSourcing
from repeatr.module.ingest import IngestContext, ingest
from repeatr.module.model import IngestRef, Module, load_module_file
from repeatr.module.order import check, order_deep
from repeatr.module.pins import Pins, resolve_pins

if TYPE_CHECKING:
    from repeatr.graph.model import GraphEvents, GraphOutcome
    from repeatr.runner.batch import BatchOptions
    from repeatr.runner.run import RunOptions


@dataclass(frozen=True)
class Loaded:
    """A module read and checked: where it is, what it says, its steps in order."""

    layout: layout_mod.ModuleLayout
    module: Module
    #: Every step (nested modules and their steps too, as ``sub.step``), the original's order.
    order: list[str]

    @property
    def file(self) -> str:
        return str(self.layout.file)


def load_layout(where: layout_mod.ModuleLayout) -> Loaded:
    file = str(where.file)
    _ = where.name  # a module whose path is not a valid name fails here, before anything runs
    mod = load_module_file(where.file)
    check(mod, file)
    return Loaded(where, mod, order_deep(mod, file))


def load(cwd: Path, path: str | None = None) -> Loaded:
    """Find, parse and check the module (``path``, or the nearest one from ``cwd``).

    Raises ``ModuleError`` / ``FormulaError`` (usage, exit 1) naming the file
    and the step for any problem.
    """
    return load_layout(layout_mod.locate(cwd, path))


@dataclass(frozen=True)
class Prepared:
    loaded: Loaded
    pins: Pins
    built: Built

    @property
    def graph(self) -> Graph:
        return self.built.graph

    @property
    def workspace(self) -> layout_mod.Workspace:
        return self.loaded.layout.workspace


def prepare(loaded: Loaded, *, dry: bool = False) -> Prepared:
    """Pin the imports and build the graph (blocking: ingests pack and run git).

    ``dry``: a pack ingest hashes without storing (``module plan``).
    """
    ws = loaded.layout.workspace
    staging = ws.staging_url
    ctx = IngestContext(loaded.layout.root, {"tar": staging}, ws, dry=dry)

    def ingest_tool(ref: IngestRef) -> tuple[str, WareSourcing]:
        return ingest(ref, ctx)

    pins = resolve_pins(loaded.module, CatalogView(ws), ingest_tool, loaded.file)
    sourcing = WareSourcing()
    sourcing.add_packtype("tar", [staging])
    sourcing.merge(pins.sourcing)
    built = build_graph(loaded.module, loaded.order, pins, sourcing, staging, loaded.file)
    return Prepared(loaded, pins, built)


# ---------------------------------------------------------------- plan


@dataclass(frozen=True)
class StepPlan:
    """What ``module plan`` says of one step."""

    name: str
    #: "module" (a nested module: no job of its own), "memoized", "run".
    status: str
    #: Why it runs: "" / "not run before" / "reads <step> (not memoized)".
    reason: str = ""


def plan(prepared: Prepared, options: RunOptions) -> list[StepPlan]:
    """Each step in order, and whether the memo store answers it (nothing runs).

    A step whose inputs come from a step that would run cannot be looked up
    (its inputs are not known yet): it runs.
    """
    from repeatr.runner.run import RunnerEvents
    from repeatr.runner.run import prepare as prepare_run

    graph = prepared.graph
    known: dict[str, NodeResult] = {}
    out: list[StepPlan] = []
    for name in prepared.loaded.order:
        if name not in graph.nodes:
            out.append(StepPlan(name, "module"))
            continue
        node = graph.nodes[name]
        blocked = sorted(n for n in node.needs if n not in known)
        if blocked:
            out.append(StepPlan(name, "run", f"reads {', '.join(blocked)} (not memoized)"))
            continue
        found = prepare_run(node.origin or name, options, RunnerEvents(), formula_file(node, known))
        if found.hit is None:
            out.append(StepPlan(name, "run", "not run before"))
            continue
        known[name] = NodeResult.of_record(name, found.hit, memo_hit=True)
        out.append(StepPlan(name, "memoized"))
    return out


# ---------------------------------------------------------------- run


@dataclass(frozen=True)
class ModuleOutcome:
    graph: GraphOutcome
    #: Export item -> ware ID; None when a step failed (nothing exported).
    exports: Mapping[str, str] | None
    #: Where the candidate release was written (None: failed).
    candidate: Path | None = None
    #: Wares copied to each ``--target`` warehouse.
    copied: Mapping[str, Sequence[str]] = field(default_factory=dict)


def resolve_exports(exports: Mapping[str, Input], done: Mapping[str, NodeResult]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item, ware in exports.items():
        if isinstance(ware, Output):
            results = done[ware.node].results
            if ware.path not in results:
                raise ModuleError(
                    f"export {item!r}: step {ware.node!r} has no output {ware.path!r}"
                )
            out[item] = results[ware.path]
        else:
            out[item] = ware
    return dict(sorted(out.items()))


def copy_to_targets(
    wares: Sequence[str], source: str, targets: Sequence[str], log: Callable[[str], None]
) -> dict[str, list[str]]:
    """Copy each of ``wares`` (from the ``source`` warehouse) into every target; blocking."""
    import shutil

    from repeatr.model.wareid import WareID
    from repeatr.warehouse import open_from_sources, redact, warehouse_for

    copied: dict[str, list[str]] = {}
    for target in targets:
        warehouse = warehouse_for(target)
        for text in wares:
            ware = WareID.parse(text)
            if ware.is_empty or ware.packtype == "git":
                continue
            with (
                open_from_sources(ware, [source]) as (_url, stream),
                warehouse.start_save() as session,
            ):
                shutil.copyfileobj(stream, session.file)
                session.commit(ware)
            copied.setdefault(target, []).append(text)
        log(f"copied {len(copied.get(target, []))} ware(s) to {redact(target)}")
    return copied


class GraphRunner(Protocol):
    """Another way to run a module's graph (``module run --dask``)."""

    @property
    def outputs_at(self) -> str:
        """The warehouse its steps save their outputs to."""
        ...

    async def run(
        self, graph: Graph, options: RunOptions, batch: BatchOptions, events: GraphEvents
    ) -> GraphOutcome: ...


async def run_module(
    prepared: Prepared,
    options: RunOptions,
    batch: BatchOptions,
    events: GraphEvents,
    *,
    targets: Sequence[str] = (),
    runner: GraphRunner | None = None,
) -> ModuleOutcome:
    """Run the module's graph; on success copy outputs to ``targets`` and save the candidate.

    ``runner``: what runs the graph and where its outputs are saved (None:
    ``repeatr.graph.local.run_graph``, saving to the workspace's staging
    warehouse; ``repeatr module run --dask`` gives Dask's).
    Raises ``RepeatrError`` for what stopped the whole run (a cancel);
    a step that fails is in the outcome (``exports`` None).
    """
    import anyio.to_thread

    from repeatr.graph.local import run_graph
    from repeatr.warehouse import warehouse_for

    for target in targets:
        warehouse_for(target)  # an unknown scheme fails now, not after every step ran
    ws = prepared.workspace
    await anyio.to_thread.run_sync(ws.make_staging)
    source = ws.staging_url
    if runner is None:
        outcome = await run_graph(prepared.graph, options, batch, events)
    else:
        outcome = await runner.run(prepared.graph, options, batch, events)
        source = runner.outputs_at
    if outcome.failed or outcome.skipped:
        return ModuleOutcome(outcome, None)
    exports = resolve_exports(prepared.built.exports, outcome.done)
    copied: dict[str, list[str]] = {}
    if targets:
        produced = sorted({w for result in outcome.done.values() for w in result.results.values()})
        copied = await anyio.to_thread.run_sync(
            copy_to_targets, produced, source, list(targets), events.log
        )
    name = prepared.loaded.layout.name
    candidate = await anyio.to_thread.run_sync(CatalogView(ws).save_candidate, name, exports)
    return ModuleOutcome(outcome, exports, candidate, copied)


def exports_json(exports: Mapping[str, str]) -> str:
    """The exports as reach printed them: tab-indented JSON (``{}`` when none), no newline."""
    if not exports:
        return "{}"
    return json.dumps(dict(sorted(exports.items())), indent="\t")
