"""The original's step order (go-timeless-api funcs/moduleOrder_test.go) and every wiring error."""

from __future__ import annotations

from typing import Any

import pytest

from repeatr.errors import Category, ModuleError
from repeatr.model.formula import Action
from repeatr.module.model import Module, Operation, ParentRef, SlotRef, parse_import_ref
from repeatr.module.order import check, order_deep, order_steps


def op(inputs: dict[str, str] | None = None, outputs: dict[str, str] | None = None) -> Operation:
    return Operation(
        inputs=None if inputs is None else {p: SlotRef.parse(r) for p, r in inputs.items()},
        action=Action(),
        outputs=outputs or {},
    )


def mod(steps: dict[str, Any], imports: dict[str, str] | None = None, **exports: str) -> Module:
    return Module(
        imports=None if imports is None else {k: parse_import_ref(v) for k, v in imports.items()},
        steps=steps,
        exports={k: SlotRef.parse(v) for k, v in exports.items()},
    )


def test_nil_relation_lexical_ordering() -> None:
    m = mod({"stepD": op(), "stepB": op(), "stepA": op(), "stepC": op()})
    assert order_steps(m) == ["stepA", "stepB", "stepC", "stepD"]


def test_fanout_lexical_ordering() -> None:
    reader = {"/": "step0.theslot"}
    m = mod({
        "stepD": op(reader), "stepB": op(reader), "stepA": op(reader), "stepC": op(reader),
        "step0": op(outputs={"theslot": "/"}),
    })
    assert order_steps(m) == ["step0", "stepA", "stepB", "stepC", "stepD"]


def test_fan_in_lexical_ordering() -> None:
    out = {"theslot": "/"}
    m = mod({
        "stepD": op(outputs=out), "stepB": op(outputs=out),
        "stepA": op(outputs=out), "stepC": op(outputs=out),
        "step9": op({"/a": "stepA.theslot", "/b": "stepB.theslot",
                     "/c": "stepC.theslot", "/d": "stepD.theslot"}),
    })
    assert order_steps(m) == ["stepA", "stepB", "stepC", "stepD", "step9"]


def test_simple_linear_ordering() -> None:
    m = mod({
        "stepA": op(outputs={"aslot": "/"}),
        "stepB": op({"/": "stepA.aslot"}, {"xslot": "/"}),
        "stepD": op({"/": "stepB.xslot"}, {"xslot": "/"}),
        "stepC": op({"/": "stepD.xslot"}),
    })
    assert order_steps(m) == ["stepA", "stepB", "stepD", "stepC"]


def test_complex_ordering() -> None:
    s = {"slot": "/"}
    m = mod({
        "stepA": op(outputs=s),
        "stepB": op({"/": "stepA.slot"}, s),
        "stepC": op(outputs=s),
        "stepD": op({"/": "stepC.slot"}, s),
        "stepE": op({"/": "stepB.slot", "/1": "stepD.slot"}, s),
        "stepF": op({"/": "stepD.slot"}, s),
        "stepG": op({"/": "stepF.slot"}, s),
        "stepH": op({"/": "stepE.slot"}, s),
        "stepI": op({"/": "stepF.slot"}, s),
        "stepJ": op({"/": "stepF.slot"}, s),
        "stepK": op({"/": "stepE.slot"}, s),
        "stepL": op({"/": "stepG.slot", "/1": "stepK.slot", "/2": "stepH.slot"}, s),
        "stepM": op({"/": "stepI.slot", "/1": "stepJ.slot"}, s),
    })
    assert order_steps(m) == [f"step{c}" for c in "ABCDEFGHIJKLM"]


def deep_module() -> Module:
    return mod({
        "stepFoo": op(outputs={"slot": "/"}),
        "stepBar": op(outputs={"slot": "/"}),
        "stepSub": mod(
            {
                "deeper": mod(
                    {"rlydeep": op(outputs={"slot": "/"})},
                    {"suby": "parent:subx"},
                    zowslot="rlydeep.slot",
                ),
                "midstep": op({"/": "deeper.zowslot"}, {"slot": "/"}),
            },
            {"subx": "parent:stepFoo.slot"},
            wowslot="midstep.slot",
        ),
        "stepWub": op({"/": "stepSub.wowslot"}),
    })


def test_deep_submodule_ordering() -> None:
    assert order_deep(deep_module()) == [
        "stepBar", "stepFoo", "stepSub", "stepSub.deeper", "stepSub.deeper.rlydeep",
        "stepSub.midstep", "stepWub",
    ]


def test_dependencies_come_before_a_step_visited_in_name_order() -> None:
    # Derived (spec §7): a needs z; roots visited a, b, z: z is pulled ahead of a.
    m = mod({"a": op({"/": "z.out"}), "b": op(), "z": op(outputs={"out": "/"})})
    assert order_steps(m) == ["z", "a", "b"]


def test_a_cycle_is_named() -> None:
    m = mod({"a": op({"/": "b.out"}, {"out": "/o"}), "b": op({"/": "a.out"}, {"out": "/o"})})
    with pytest.raises(ModuleError, match=r"not a dag: loop detected at 'a'") as info:
        order_steps(m, "x/module.tl")
    assert info.value.category is Category.USAGE
    assert "x/module.tl" in str(info.value)


def test_a_cycle_inside_a_nested_module_names_the_nested_step() -> None:
    inner = mod({"p": op({"/": "q.o"}, {"o": "/o"}), "q": op({"/": "p.o"}, {"o": "/o"})})
    with pytest.raises(ModuleError, match=r"loop detected at 'sub\.p'"):
        order_deep(mod({"sub": inner}))


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (mod({"a": op({"/": "nope"})}), r"step 'a'.*'nope' is not the name of an import"),
        (mod({"a": op({"/": "ghost.out"})}), r"step 'a'.*'ghost' is not the name of a step"),
        (
            mod({"a": op(outputs={"out": "/o"}), "b": op({"/": "a.other"})}),
            r"step 'b'.*step 'a' has no output named 'other'",
        ),
        (mod({"a": op(outputs={"out": "/o"})}, None, result="a.missing"),
         r"export 'result' names 'a.missing'"),
        (mod({"a": op()}, {"x": "parent:a.out"}), r"import 'x'.*nested modules only"),
        (
            mod({"sub": mod({"s": op()}, {"src": "ingest:git:.:HEAD"})}),
            r"module 'sub': import 'src'.*cannot ingest",
        ),
        (
            mod({"sub": mod({"s": op()}, {"y": "parent:nothere"})}),
            r"step 'sub' has an invalid reference to 'parent:nothere'",
        ),
        (
            mod({"sub": mod({"s": op({"/": "y"})}, {"x": "parent:a.b"})}),
            r"step 'sub\.s'.*'y' is not the name of an import",
        ),
    ],
)
def test_every_wiring_problem_is_reported_before_anything_runs(module: Module, expected: str) -> None:
    with pytest.raises(ModuleError, match=expected) as info:
        check(module, "the/module.tl")
    assert str(info.value).startswith("the/module.tl: ")
    assert info.value.category is Category.USAGE


def test_all_problems_at_once() -> None:
    m = mod({"a": op({"/": "nope", "/x": "ghost.y"})}, None, out="zip.zap")
    with pytest.raises(ModuleError) as info:
        check(m, "m.tl")
    assert len(str(info.value).splitlines()) == 3


def test_parent_refs_are_wiring_for_the_order() -> None:
    m = mod({
        "sub": mod({"s": op({"/": "x"})}, {"x": "parent:late.out"}),
        "late": op(outputs={"out": "/o"}),
    })
    check(m, "m.tl")
    assert order_deep(m) == ["late", "sub", "sub.s"]
    assert isinstance((m.steps or {})["sub"], Module)
    sub = (m.steps or {})["sub"]
    assert isinstance(sub, Module)
    assert sub.imports == {"x": ParentRef(SlotRef("late", "out"))}
