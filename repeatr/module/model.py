"""``module.tl``: imports, steps and exports, as the original wrote them.

A module (go-timeless-api ``module.go``) names its *imports* (wares from a
catalog, an ingest, or, in a nested module, its parent's scope), its *steps*
(each an operation, a formula with slot references for inputs, or a nested
module) and its *exports* (items other modules can import from a release).

References are strings, split as the original splits them
(``referencesSerial.go``, ``catalogSerial.go``):

* a **slot ref** ``x`` names an import; ``s.y`` names output (or export) ``y``
  of step ``s``, split at the first ``.``;
* an **import ref** is ``catalog:MODULE:RELEASE:ITEM``, ``parent:SLOTREF`` or
  ``ingest:KIND:ARGS``, split at the first ``:``.

Files are read in the original's JSON dialect (``repeatr.model.jsonload``:
commas optional, trailing commas allowed); unknown keys are errors naming
the key. :func:`canonical_json` writes a module back as the original did
(tab indent, map keys sorted, struct fields in declaration order, empty
exports/outputs left out, absent imports/steps/inputs as ``null``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from repeatr.errors import FormulaError
from repeatr.model.formula import Action
from repeatr.model.jsonload import Key, decode
from repeatr.module.names import module_name_problem

Problems = list[tuple[list[str | int], str]]


@dataclass(frozen=True, order=True)
class SlotRef:
    """``x`` (``step`` empty: an import of the module) or ``s.y`` (slot ``y`` of step ``s``)."""

    step: str
    slot: str

    @classmethod
    def parse(cls, text: str) -> SlotRef:
        if not text:
            raise ValueError("empty string is not a slot reference")
        step, dot, slot = text.partition(".")
        if not dot:
            return cls("", text)
        if not step or not slot:
            raise ValueError(f"{text!r} is not a slot reference ('x' or 'step.slot')")
        return cls(step, slot)

    def __str__(self) -> str:
        return f"{self.step}.{self.slot}" if self.step else self.slot


@dataclass(frozen=True)
class CatalogRef:
    """``catalog:MODULE:RELEASE:ITEM``: an item of a release in the workspace's catalog."""

    module: str
    release: str = ""
    item: str = ""

    def __str__(self) -> str:
        parts = [self.module, self.release, self.item]
        while parts and not parts[-1]:
            parts.pop()
        return "catalog:" + ":".join(parts)


@dataclass(frozen=True)
class ParentRef:
    """``parent:x`` / ``parent:s.y``: the parent module's import or step output (nested only)."""

    ref: SlotRef

    def __str__(self) -> str:
        return f"parent:{self.ref}"


@dataclass(frozen=True)
class IngestRef:
    """``ingest:KIND:ARGS``: data entering from outside (git, pack, literal; top level only)."""

    kind: str
    args: str

    def __str__(self) -> str:
        return f"ingest:{self.kind}:{self.args}"


ImportRef = CatalogRef | ParentRef | IngestRef

#: The ingest kinds reach knew (gadgets/ingest/ingest.go).
INGEST_KINDS = ("git", "pack", "literal")


def parse_import_ref(text: str) -> ImportRef:
    """Parse an import ref; raises ``ValueError`` saying what is wrong."""
    kind, colon, rest = text.partition(":")
    if not colon:
        raise ValueError(
            "an import ref is 'catalog:MODULE:RELEASE:ITEM', 'parent:SLOTREF' or 'ingest:KIND:ARGS'"
        )
    if kind == "catalog":
        parts = rest.split(":")
        if len(parts) > 3:
            raise ValueError("a catalog ref is 'catalog:MODULE:RELEASE:ITEM' (at most three parts)")
        if problem := module_name_problem(parts[0]):
            raise ValueError(f"module name {parts[0]!r}: {problem}")
        return CatalogRef(*parts)
    if kind == "parent":
        return ParentRef(SlotRef.parse(rest))
    if kind == "ingest":
        ingest_kind, colon, args = rest.partition(":")
        if not colon:
            raise ValueError("an ingest ref is 'ingest:KIND:ARGS' (e.g. 'ingest:git:.:HEAD')")
        if ingest_kind not in INGEST_KINDS:
            raise ValueError(
                f"unknown ingest kind {ingest_kind!r} (known: {', '.join(INGEST_KINDS)})"
            )
        return IngestRef(ingest_kind, args)
    raise ValueError(
        f"unknown import kind {kind!r}:"
        " an import ref starts with 'catalog:', 'parent:' or 'ingest:'"
    )


@dataclass(frozen=True)
class Operation:
    """A formula whose inputs are slot refs; ``outputs`` maps slot names to paths."""

    #: Input path -> slot ref (None: absent, as the original distinguishes).
    inputs: Mapping[str, SlotRef] | None
    action: Action
    #: Output slot name -> absolute path.
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Module:
    imports: Mapping[str, ImportRef] | None = None
    steps: Mapping[str, Step] | None = None
    exports: Mapping[str, SlotRef] = field(default_factory=dict)


Step = Operation | Module


# ---------------------------------------------------------------- the file format


class _RawOperation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    inputs: dict[str, str] | None = None
    action: Action = msgspec.field(default_factory=Action)
    outputs: dict[str, str] | None = None


class _RawStep(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    operation: _RawOperation | None = None
    module: _RawModule | None = None


class _RawModule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    imports: dict[str, str] | None = None
    steps: dict[str, _RawStep] | None = None
    exports: dict[str, str] | None = None


def _check(raw: _RawModule, at: list[str | int], problems: Problems) -> None:
    for slot, text in (raw.imports or {}).items():
        try:
            parse_import_ref(text)
        except ValueError as exc:
            problems.append(([*at, "imports", Key(slot)], f"{text!r}: {exc}"))
    for name, step in (raw.steps or {}).items():
        here: list[str | int] = [*at, "steps", Key(name)]
        if not name or "." in name:
            problems.append((here, "a step name must be non-empty and contain no '.'"))
        if (step.operation is None) == (step.module is None):
            problems.append((here, "a step has exactly one key: 'operation' or 'module'"))
            continue
        if step.module is not None:
            _check(step.module, [*here, "module"], problems)
            continue
        assert step.operation is not None
        op = step.operation
        for path, ref in (op.inputs or {}).items():
            if not path.startswith("/"):
                problems.append(
                    ([*here, "operation", "inputs", Key(path)], "must be an absolute path")
                )
            _check_slot_ref(ref, [*here, "operation", "inputs", Key(path)], problems)
        for slot, path in (op.outputs or {}).items():
            if not path.startswith("/"):
                problems.append(
                    (
                        [*here, "operation", "outputs", Key(slot)],
                        f"{path!r} must be an absolute path",
                    )
                )
    for item, ref in (raw.exports or {}).items():
        _check_slot_ref(ref, [*at, "exports", Key(item)], problems)


def _check_slot_ref(text: str, at: list[str | int], problems: Problems) -> None:
    try:
        SlotRef.parse(text)
    except ValueError as exc:
        problems.append((at, str(exc)))


def _checked(raw: _RawModule) -> Problems:
    problems: Problems = []
    _check(raw, [], problems)
    return problems


def _convert(raw: _RawModule) -> Module:
    steps: dict[str, Step] | None = None
    if raw.steps is not None:
        steps = {}
        for name, step in raw.steps.items():
            if step.module is not None:
                steps[name] = _convert(step.module)
            else:
                assert step.operation is not None
                op = step.operation
                steps[name] = Operation(
                    inputs=None
                    if op.inputs is None
                    else {p: SlotRef.parse(r) for p, r in op.inputs.items()},
                    action=op.action,
                    outputs=dict(op.outputs or {}),
                )
    return Module(
        imports=None
        if raw.imports is None
        else {s: parse_import_ref(r) for s, r in raw.imports.items()},
        steps=steps,
        exports={i: SlotRef.parse(r) for i, r in (raw.exports or {}).items()},
    )


def load_module_bytes(data: bytes, name: str) -> Module:
    """Parse a ``module.tl``; raises ``FormulaError`` naming ``name``, the field and the problem."""
    return _convert(decode(data, _RawModule, name, check=_checked))


def load_module_file(path: Path) -> Module:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormulaError(f"{path}: cannot read: {exc.strerror}") from exc
    return load_module_bytes(data, str(path))


# ---------------------------------------------------------------- canonical output


def _sorted(mapping: Mapping[str, object]) -> dict[str, object]:
    return {k: mapping[k] for k in sorted(mapping)}


def _action(action: Action) -> dict[str, object]:
    raw = msgspec.to_builtins(action)
    assert isinstance(raw, dict)
    if isinstance(raw.get("env"), dict):
        raw["env"] = _sorted(raw["env"])
    return raw


def _module_doc(mod: Module) -> dict[str, object]:
    doc: dict[str, object] = {
        "imports": None
        if mod.imports is None
        else {k: str(v) for k, v in _sorted(mod.imports).items()},
        "steps": None
        if mod.steps is None
        else {k: _step_doc(mod.steps[k]) for k in sorted(mod.steps)},
    }
    if mod.exports:
        doc["exports"] = {k: str(v) for k, v in _sorted(mod.exports).items()}
    return doc


def _step_doc(step: Step) -> dict[str, object]:
    if isinstance(step, Module):
        return {"module": _module_doc(step)}
    op: dict[str, object] = {
        "inputs": None
        if step.inputs is None
        else {k: str(v) for k, v in _sorted(step.inputs).items()},
        "action": _action(step.action),
    }
    if step.outputs:
        op["outputs"] = _sorted(step.outputs)
    return {"operation": op}


def canonical_json(mod: Module, *, indent: bool = True) -> str:
    """The module as the original serialized it (``moduleSerial_test.go``), no final newline."""
    doc = _module_doc(mod)
    if indent:
        return json.dumps(doc, indent="\t", ensure_ascii=False)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
