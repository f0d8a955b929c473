"""Pinning a module's imports to ware IDs (go-timeless-api funcs/moduleResolvePins.go).

Every ``catalog:`` and ``ingest:`` import, nested modules' too, becomes a
ware ID, keyed ``slot`` at the top and ``sub.slot`` (``sub.deeper.slot``...)
below. ``parent:`` imports are not pins: they read the parent's scope when
the graph is built. A catalog import also says where its ware can be
fetched: its module's ``mirrors.tl`` (byWare, then byPackType, then
byModule for that module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from repeatr.errors import ModuleError
from repeatr.module.catalog import CatalogView, WareSourcing, module_ware_sourcing
from repeatr.module.model import CatalogRef, IngestRef, Module

#: Resolves one ingest import: its ware and where to fetch it.
IngestTool = Callable[[IngestRef], tuple[str, WareSourcing]]


@dataclass
class Pins:
    #: ``sub.slot`` -> ware ID.
    wares: dict[str, str] = field(default_factory=dict)
    sourcing: WareSourcing = field(default_factory=WareSourcing)

    def sorted_items(self) -> list[tuple[str, str]]:
        """As reach printed them: by submodule path, then slot."""
        return sorted(self.wares.items(), key=lambda kv: (kv[0].rpartition(".")[0], kv[0]))


def _catalog_ware(view: CatalogView, ref: CatalogRef, key: str) -> tuple[str, WareSourcing]:
    if not ref.release or not ref.item:
        raise ModuleError(f"import {key!r} ({ref}): a catalog ref needs a release and an item")
    lineage = view.lineage(ref.module)
    ware = lineage.item(ref.release, ref.item)
    return ware, module_ware_sourcing(view.mirrors(ref.module), ware, ref.module)


def resolve_pins(mod: Module, view: CatalogView, ingest: IngestTool, file: str) -> Pins:
    """Pin every catalog and ingest import of ``mod`` and its nested modules.

    Raises ``ModuleError`` naming ``file`` and the import for a lookup that fails.
    """
    pins = Pins()

    def walk(m: Module, ctx: str) -> None:
        for slot in sorted(m.imports or {}):
            ref = (m.imports or {})[slot]
            key = f"{ctx}.{slot}" if ctx else slot
            try:
                if isinstance(ref, CatalogRef):
                    ware, sourcing = _catalog_ware(view, ref, key)
                elif isinstance(ref, IngestRef):
                    ware, sourcing = ingest(ref)
                else:
                    continue
            except ModuleError as exc:
                raise ModuleError(f"{file}: import {key!r}: {exc.message}", hint=exc.hint) from exc
            pins.wares[key] = ware
            pins.sourcing.merge(sourcing)
        for name in sorted(m.steps or {}):
            step = (m.steps or {})[name]
            if isinstance(step, Module):
                walk(step, f"{ctx}.{name}" if ctx else name)

    walk(mod, "")
    return pins
