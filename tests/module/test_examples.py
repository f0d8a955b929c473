"""reach's examples, run unchanged, give the original's exports and stderr (its *_test.go)."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.module.conftest import Scratch

pytestmark = pytest.mark.root

BASE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"
HELLO = "tar:89LoLzgAYkndYpNQC7H94eR6tU6F4EWy2yFGouDCQz1cx9JpYmEPyDm2YWwYTGDvPv"
PRODUCT = "tar:77k8uXWaArTqvyecQmjW9Xb3q3yMM9Mih842dA3HrrDW4Xs8uvU9kfipMWJKLQ5quZ"


def reach_lines(stderr: str) -> str:
    """stderr without the progress events (JSON lines when stderr is not a terminal)."""
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith('{"event"'))


def one_step(*pins: tuple[str, str]) -> str:
    pinned = "".join(f'  - "{k}": {v}\n' for k, v in pins)
    return (
        "module loaded\nmodule contains 1 steps\nmodule evaluation plan order:\n  - 01: main\n"
        f"imports pinned to hashes:\n{pinned}module eval complete.\nmodule exports:\n"
    )


def test_hellomodule(scratch: Scratch) -> None:
    ws = scratch.example("hellomodule")
    done = scratch.repeatr(ws, "module", "run", "--executor", "ns")
    assert done.code == 0, done.stderr
    assert reach_lines(done.stderr) == one_step(("base", BASE))
    assert done.stdout == f'{{\n\t"wowslot": "{HELLO}"\n}}\n'
    candidate = ws / ".timeless/candidates/default/unnamed/lineage.tl"
    lineage = json.loads(candidate.read_text())
    assert lineage["releases"][0]["name"] == "candidate"
    assert lineage["releases"][0]["items"] == {"wowslot": HELLO}
    digest = HELLO.partition(":")[2]
    assert (ws / ".timeless/warehouse" / digest[:3] / digest[3:6] / digest).is_file()


def test_recursivemodule(scratch: Scratch) -> None:
    ws = scratch.example("recursivemodule")
    done = scratch.repeatr(ws, "module", "run", "--executor", "ns")
    assert done.code == 0, done.stderr
    assert reach_lines(done.stderr) == textwrap.dedent(f"""\
        module loaded
        module contains 5 steps
        module evaluation plan order:
          - 01: step-first
          - 02: submodule-jamboree
          - 03: submodule-jamboree.bap
          - 04: submodule-jamboree.boop
          - 05: step-after
        imports pinned to hashes:
          - "base": {BASE}
          - "submodule-jamboree.image": {BASE}
        module eval complete.
        module exports:
        """)
    assert done.stdout == f'{{\n\t"product": "{PRODUCT}"\n}}\n'


def test_helloworkspace_in_modules(scratch: Scratch) -> None:
    ws = scratch.example("helloworkspace")
    outside = scratch.repeatr(ws, "module", "run", "--executor", "ns")
    assert (outside.code, outside.stdout) == (1, "")
    assert "no module found" in outside.stderr
    assert "Traceback" not in outside.stderr

    # proj-bar imports proj-foo's candidate, which does not exist yet.
    early = scratch.repeatr(ws, "module", "run", "example.org/proj-bar", "--executor", "ns")
    assert early.code == 1
    assert "no such release 'candidate' in lineage 'example.org/proj-foo'" in early.stderr

    foo = scratch.repeatr(ws / "example.org/proj-foo", "module", "run", "--executor", "ns")
    assert foo.code == 0, foo.stderr
    assert reach_lines(foo.stderr) == one_step(("base", BASE))
    assert foo.stdout == f'{{\n\t"wowslot": "{HELLO}"\n}}\n'

    bar = scratch.repeatr(ws / "example.org/proj-bar", "module", "run", "--executor", "ns")
    assert bar.code == 0, bar.stderr
    assert reach_lines(bar.stderr) == one_step(("base", BASE), ("pipe", HELLO))
    assert bar.stdout == "{}\n"

    baz = scratch.repeatr(ws, "module", "run", "example.org/proj-baz", "--executor", "ns")
    assert baz.code == 0, baz.stderr
    assert reach_lines(baz.stderr) == one_step(("base", BASE), ("pipe", BASE))
    assert baz.stdout == "{}\n"


def test_a_rerun_runs_nothing(scratch: Scratch) -> None:
    ws = scratch.example("recursivemodule")
    first = scratch.repeatr(ws, "module", "run", "--executor", "ns")
    assert first.code == 0, first.stderr
    plan = scratch.repeatr(ws, "--format", "json", "module", "plan", "--executor", "ns")
    assert plan.code == 0, plan.stderr
    (result,) = plan.events()
    assert [(s["step"], s["status"]) for s in result["steps"]] == [
        ("step-first", "memoized"),
        ("submodule-jamboree", "module"),
        ("submodule-jamboree.bap", "memoized"),
        ("submodule-jamboree.boop", "memoized"),
        ("step-after", "memoized"),
    ]
    again = scratch.repeatr(ws, "--format", "json", "module", "run", "--executor", "ns")
    assert again.code == 0, again.stderr
    events = again.events()
    finals = {e["step"]: e["state"] for e in events if e["event"] == "step"}
    assert set(finals.values()) == {"memoized"}
    assert [e for e in events if e["event"] == "output"] == []
    assert events[-1]["exports"] == {"product": PRODUCT}
