"""Catalogs: each module's releases (``lineage.tl``) and where its wares live (``mirrors.tl``).

The formats are go-timeless-api's (catalog.go, warehousing.go):

* ``<catalog>/<module>/lineage.tl``: ``{"name", "releases": [{"name",
  "items": {item: ware ID}, "metadata", "hazards"}]}``, newest release first,
  release names unique;
* ``<catalog>/<module>/mirrors.tl`` (optional): ``{"byPackType": {type:
  [url]}, "byModule": {module: {type: [url]}}, "byWare": {ware: [url]}}``.

A workspace's view of a lineage (reach's candidate decorator) is its
catalog's, with the ``candidate`` release of
``.timeless/candidates/default/<module>/lineage.tl`` (what the module's last
``module run`` exported) prepended; a module with only a candidate is seen
through it alone.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from repeatr.errors import ModuleError
from repeatr.model.jsonload import decode
from repeatr.module.layout import Workspace
from repeatr.module.names import module_name_problem

LINEAGE_FILE = "lineage.tl"
MIRRORS_FILE = "mirrors.tl"
#: The release ``module run`` records; never a name for ``catalog release``.
CANDIDATE = "candidate"
#: Taken (in ``.timeless/``) while a release is added to a lineage.
RELEASE_LOCK = "catalog.lock"
#: Seconds to wait for it: a release holds it for milliseconds.
RELEASE_LOCK_TIMEOUT = 30.0


class Release(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    items: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    hazards: dict[str, str] | None = None


def ware_item_problem(text: str) -> str | None:
    """Why ``text`` cannot be a release's item, or None.

    A catalog is data from whoever published it: its items are ware IDs,
    never a ``mount:`` (host access, which only the formula's or module's
    own author may ask for). The hash is not checked here (the original's
    test vectors use short ones); the runner checks it before fetching.
    """
    from repeatr.model.wareid import ALL_PACKTYPES

    packtype, colon, hash_ = text.partition(":")
    if not colon or packtype not in ALL_PACKTYPES or not hash_:
        return (
            f"not a ware ID (<packtype>:<hash>, packtypes: {', '.join(ALL_PACKTYPES)});"
            " a catalog gives wares, never host paths"
        )
    return None


#: The longest release name ``catalog release`` accepts (a DNS label's 63, with room).
RELEASE_NAME_MAX = 128


def release_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a new release's name, or None.

    Release names are printed (``catalog show``, ``module plan``) and typed
    in refs: no ``:`` or ``/`` (ref separators), no spaces around, and no
    control or format characters (terminal escapes, NUL, bidi overrides).
    """
    import unicodedata

    if not name or name.strip() != name:
        return "must be non-empty, with no spaces around it"
    if ":" in name or "/" in name:
        return "must not contain ':' or '/'"
    if len(name) > RELEASE_NAME_MAX:
        return f"must be no more than {RELEASE_NAME_MAX} characters"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "must not contain control or format characters"
    return None


class Lineage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    releases: list[Release] | None = None

    def release(self, name: str) -> Release:
        for rel in self.releases or ():
            if rel.name == name:
                return rel
        raise ModuleError(f"no such release {name!r} in lineage {self.name!r}")

    def item(self, release: str, item: str) -> str:
        """The ware ID of ``item``; ``ModuleError`` when missing or not a ware ID."""
        rel = self.release(release)
        where = f"{self.name}:{release}"
        if item not in (rel.items or {}):
            raise ModuleError(f"no such item {item!r} in release {where!r}")
        ware = (rel.items or {})[item]
        if problem := ware_item_problem(ware):
            raise ModuleError(f"item {item!r} of release {where!r} is {ware!r}: {problem}")
        return ware

    def prepend(self, rel: Release) -> Lineage:
        """A new lineage with ``rel`` first; a release of that name already there is refused."""
        if any(r.name == rel.name for r in self.releases or ()):
            raise ModuleError(f"catalog {self.name!r} already has a release named {rel.name!r}")
        return Lineage(name=self.name, releases=[rel, *(self.releases or ())])


class Mirrors(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    by_packtype: dict[str, list[str]] | None = msgspec.field(default=None, name="byPackType")
    by_module: dict[str, dict[str, list[str]]] | None = msgspec.field(default=None, name="byModule")
    by_ware: dict[str, list[str]] | None = msgspec.field(default=None, name="byWare")


@dataclass
class WareSourcing:
    """Where to fetch wares from, by ware ID and by packtype (api.WareSourcing, pivoted)."""

    by_ware: dict[str, list[str]] = field(default_factory=dict)
    by_packtype: dict[str, list[str]] = field(default_factory=dict)

    def add_ware(self, ware: str, urls: list[str]) -> None:
        self.by_ware.setdefault(ware, []).extend(urls)

    def add_packtype(self, packtype: str, urls: list[str]) -> None:
        self.by_packtype.setdefault(packtype, []).extend(urls)

    def merge(self, other: WareSourcing) -> None:
        for ware, urls in other.by_ware.items():
            self.add_ware(ware, urls)
        for packtype, urls in other.by_packtype.items():
            self.add_packtype(packtype, urls)

    def for_ware(self, ware: str) -> list[str]:
        """byWare[ware] ++ byPackType[its type] (PivotToWareID), without repeats."""
        packtype = ware.partition(":")[0]
        return list(
            dict.fromkeys([*self.by_ware.get(ware, ()), *self.by_packtype.get(packtype, ())])
        )


def module_ware_sourcing(mirrors: Mirrors | None, ware: str, module: str) -> WareSourcing:
    """A catalog import's sources: byWare ++ byPackType ++ byModule[module] (PivotToModuleWare)."""
    out = WareSourcing()
    if mirrors is None:
        return out
    packtype = ware.partition(":")[0]
    out.add_ware(ware, list((mirrors.by_ware or {}).get(ware, ())))
    out.add_ware(ware, list((mirrors.by_packtype or {}).get(packtype, ())))
    out.add_ware(ware, list((mirrors.by_module or {}).get(module, {}).get(packtype, ())))
    return out


def _module_dir(root: Path, module: str) -> Path:
    if problem := module_name_problem(module):
        raise ModuleError(f"module {module!r}: not a valid module name: {problem}")
    return root / module


def _read(path: Path) -> bytes | None:
    """The file's bytes; None when missing; ``ModuleError`` when not a regular file.

    A catalog may come with a checkout: a FIFO there would hang the read,
    a symlink to ``/dev/zero`` would never end it.
    """
    from repeatr.warehouse.file import NotRegularFile, open_regular

    try:
        with open_regular(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise ModuleError(str(exc)) from exc  # "<path> is not a regular file"
    except OSError as exc:
        raise ModuleError(f"{path}: cannot read: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class CatalogTree:
    """One directory of lineages (the catalog, or a saga's candidates)."""

    root: Path
    #: Where writes start from (the workspace root): no symlink below it is followed.
    #: None: from :attr:`root`.
    anchor: Path | None = None

    def lineage_path(self, module: str) -> Path:
        return _module_dir(self.root, module) / LINEAGE_FILE

    def load_lineage(self, module: str) -> Lineage | None:
        """The module's lineage, or None when the tree has none."""
        path = self.lineage_path(module)
        data = _read(path)
        if data is None:
            return None
        lineage = decode(data, Lineage, str(path))
        if lineage.name != module:
            # Its name is where a release would write it back: another module's lineage.
            raise ModuleError(
                f"{path}: names the lineage {lineage.name!r}, but it is module {module!r}'s"
            )
        return lineage

    def load_mirrors(self, module: str) -> Mirrors | None:
        path = _module_dir(self.root, module) / MIRRORS_FILE
        data = _read(path)
        if data is None:
            return None
        return decode(data, Mirrors, str(path))

    def save_lineage(self, lineage: Lineage) -> Path:
        """Write ``lineage`` (tab-indented, as reach wrote it) atomically; returns its path.

        No symlink below :attr:`anchor` is followed (``repeatr.nofollow``):
        a workspace's ``.timeless/`` may come from anyone's checkout.
        """
        from repeatr.nofollow import SymlinkInPath, write_file

        path = self.lineage_path(lineage.name)
        data = (lineage_json(lineage) + "\n").encode()
        parts = [*self.root.relative_to(self.anchor or self.root).parts, *lineage.name.split("/")]
        try:
            write_file(self.anchor or self.root, parts, LINEAGE_FILE, data)
        except SymlinkInPath as exc:
            raise ModuleError(
                f"cannot write {path}: {exc.path} is {exc.what};"
                " repeatr does not write through symlinks in a workspace's .timeless",
            ) from exc
        except OSError as exc:
            raise ModuleError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path


def release_doc(rel: Release) -> dict[str, object]:
    return {
        "name": rel.name,
        "items": None if rel.items is None else dict(sorted(rel.items.items())),
        "metadata": None if rel.metadata is None else dict(sorted(rel.metadata.items())),
        "hazards": None if rel.hazards is None else dict(sorted(rel.hazards.items())),
    }


def lineage_json(lineage: Lineage) -> str:
    doc = {"name": lineage.name, "releases": [release_doc(r) for r in lineage.releases or ()]}
    return json.dumps(doc, indent="\t", ensure_ascii=False)


@dataclass(frozen=True)
class CatalogView:
    """The workspace's catalog with its candidates laid over it."""

    workspace: Workspace

    @property
    def catalog(self) -> CatalogTree:
        return CatalogTree(self.workspace.catalog_root, self.workspace.root)

    @property
    def candidates(self) -> CatalogTree:
        return CatalogTree(self.workspace.candidates_root(), self.workspace.root)

    def lineage(self, module: str) -> Lineage:
        """The module's lineage, its candidate release first; ``ModuleError`` if there is none."""
        main = self.catalog.load_lineage(module)
        cand = self.candidates.load_lineage(module)
        if cand is not None:
            rel = cand.release(CANDIDATE)
            if main is None:
                return Lineage(name=module, releases=[rel])
            return main.prepend(rel)
        if main is None:
            raise ModuleError(
                f"no lineage for module {module!r} in {self.workspace.catalog_root}"
                " (nor a candidate release)"
            )
        return main

    def mirrors(self, module: str) -> Mirrors | None:
        return self.catalog.load_mirrors(module)

    def save_candidate(self, module: str, exports: Mapping[str, str]) -> Path:
        """Record ``exports`` as the module's ``candidate`` release (SaveCandidateRelease)."""
        rel = Release(name=CANDIDATE, items=dict(exports))
        return self.candidates.save_lineage(Lineage(name=module, releases=[rel]))

    def release(self, module: str, name: str, metadata: Mapping[str, str] | None = None) -> Release:
        """Record the module's candidate as release ``name`` in its catalog lineage.

        Raises ``ModuleError`` when there is no candidate, when ``name`` is
        taken (or is ``candidate``), or is not a usable release name.
        """
        if problem := release_name_problem(name):
            raise ModuleError(f"{name!r} is not a release name: {problem}")
        if name == CANDIDATE:
            raise ModuleError(
                f"{CANDIDATE!r} is reserved for the last run's exports; choose another name"
            )
        from repeatr import locks
        from repeatr.errors import Category

        cand = self.candidates.load_lineage(module)
        if cand is None:
            raise ModuleError(
                f"module {module!r} has no candidate release",
                hint="run `repeatr module run` in it first",
            )
        items = cand.release(CANDIDATE).items
        for item, ware in sorted((items or {}).items()):
            if problem := ware_item_problem(ware):
                raise ModuleError(f"module {module!r}: export {item!r} is {ware!r}: {problem}")
        rel = Release(
            name=name, items=dict(items or {}), metadata=dict(metadata) if metadata else None
        )
        # Read, prepend, write: under one workspace-wide lock, or a release
        # made at the same time by another process is lost.
        lock = self.workspace.dot / RELEASE_LOCK
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(locks.exclusive(
                    lock,
                    resource=f"the catalog of {self.workspace.root}",
                    timeout=RELEASE_LOCK_TIMEOUT,
                    category=Category.USAGE,
                ))
            except OSError as exc:  # a symlink there (never followed), a read-only workspace
                raise ModuleError(f"cannot take the lock {lock}: {exc.strerror or exc}") from exc
            main = self.catalog.load_lineage(module) or Lineage(name=module, releases=[])
            self.catalog.save_lineage(main.prepend(rel))
        return rel
