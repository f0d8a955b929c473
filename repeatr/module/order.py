"""Checking a module's wiring and the order the original evaluated its steps in.

The order is go-timeless-api's ``funcs/moduleOrder.go``: a depth-first
post-order, not Kahn's algorithm. Roots are visited in name order; each
step's dependencies (its input refs; for a nested module, its ``parent:``
imports) are visited first, sorted by (step, slot). The deep order lists a
nested module's own steps right after it, as ``sub.step``. (The original's
sort of dependencies compares ``a.step < b.step || a.slot < b.slot``, not a
strict order; we sort by the pair, which is what it meant and what its test
vectors show.)

:func:`check` finds every wiring problem at once, before anything runs:
an input naming no import or no step output, an export naming nothing, a
``parent:`` ref outside a nested module or naming nothing in the parent, an
``ingest:`` in a nested module (the original panicked on both of the last).
A cycle is found by :func:`order_steps` (``not a dag: loop detected at "s"``).
"""

from __future__ import annotations

from repeatr.errors import ModuleError
from repeatr.module.model import IngestRef, Module, Operation, ParentRef, SlotRef, Step


def _prefix(ctx: str, name: str) -> str:
    return f"{ctx}.{name}" if ctx else name


def step_wires(step: Step) -> list[SlotRef]:
    """The refs into its module a step reads: an operation's inputs, a module's parent: imports."""
    if isinstance(step, Operation):
        return list((step.inputs or {}).values())
    return [imp.ref for imp in (step.imports or {}).values() if isinstance(imp, ParentRef)]


def step_slots(step: Step) -> set[str]:
    """What ``s.y`` may name for this step: an operation's outputs, a module's exports."""
    if isinstance(step, Operation):
        return set(step.outputs)
    return set(step.exports)


def _ref_problem(mod: Module, ref: SlotRef) -> str | None:
    steps = mod.steps or {}
    if not ref.step:
        if ref.slot not in (mod.imports or {}):
            return f"{ref.slot!r} is not the name of an import in this module"
        return None
    if ref.step not in steps:
        return f"{ref.step!r} is not the name of a step in this module"
    if ref.slot not in step_slots(steps[ref.step]):
        what = "output" if isinstance(steps[ref.step], Operation) else "export"
        return f"step {ref.step!r} has no {what} named {ref.slot!r}"
    return None


def _check(mod: Module, ctx: str, nested: bool, problems: list[str]) -> None:
    where = f"module {ctx!r}" if ctx else "the module"
    for slot, imp in (mod.imports or {}).items():
        if isinstance(imp, ParentRef) and not nested:
            problems.append(
                f"{where}: import {slot!r} ({imp}): parent: refs are for nested modules only"
            )
        if isinstance(imp, IngestRef) and nested:
            problems.append(
                f"{where}: import {slot!r} ({imp}): a nested module cannot ingest; "
                "ingest in the top module and pass it down with parent:"
            )
    for name in sorted(mod.steps or {}):
        step = (mod.steps or {})[name]
        full = _prefix(ctx, name)
        if isinstance(step, Operation):
            for path, ref in sorted((step.inputs or {}).items()):
                if problem := _ref_problem(mod, ref):
                    problems.append(
                        f"step {full!r} has an invalid reference to {str(ref)!r}"
                        f" (input {path}): {problem}"
                    )
        else:
            for slot, imp in sorted((step.imports or {}).items()):
                if isinstance(imp, ParentRef) and (problem := _ref_problem(mod, imp.ref)):
                    problems.append(
                        f"step {full!r} has an invalid reference to {str(imp)!r}"
                        f" (import {slot!r}): {problem}"
                    )
            _check(step, full, True, problems)
    for item, ref in sorted(mod.exports.items()):
        if problem := _ref_problem(mod, ref):
            problems.append(f"{where}: export {item!r} names {str(ref)!r}: {problem}")


def check(mod: Module, file: str) -> None:
    """Raise ``ModuleError`` listing every wiring problem of ``mod`` (read from ``file``)."""
    problems: list[str] = []
    _check(mod, "", False, problems)
    if problems:
        raise ModuleError("\n".join(f"{file}: {p}" for p in problems))


def order_steps(mod: Module, file: str = "module.tl", ctx: str = "") -> list[str]:
    """The step names of ``mod`` (one level) in the original's order.

    Raises ``ModuleError`` for a cycle or a reference to nothing (naming
    ``file`` and the step).
    """
    steps = mod.steps or {}
    result: list[str] = []
    todo = set(steps)

    def visit(node: str, visiting: set[str]) -> None:
        if node not in todo:
            return
        if node in visiting:
            raise ModuleError(f"{file}: not a dag: loop detected at {_prefix(ctx, node)!r}")
        visiting.add(node)
        wires = step_wires(steps[node])
        for wire in wires:
            if problem := _ref_problem(mod, wire):
                raise ModuleError(
                    f"{file}: step {_prefix(ctx, node)!r} has an invalid reference"
                    f" to {str(wire)!r}: {problem}"
                )
        for wire in sorted(wires):
            if wire.step:
                visit(wire.step, visiting)
        result.append(node)
        todo.discard(node)

    for name in sorted(steps):
        visit(name, set())
    return result


def order_deep(mod: Module, file: str = "module.tl", ctx: str = "") -> list[str]:
    """Every step, nested ones included as ``sub.step``, each nested module before its steps."""
    result: list[str] = []
    for name in order_steps(mod, file, ctx):
        step = (mod.steps or {})[name]
        result.append(_prefix(ctx, name))
        if isinstance(step, Module):
            result.extend(order_deep(step, file, _prefix(ctx, name)))
    return result
