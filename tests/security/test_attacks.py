"""The attack suite, generated from the table in docs/executors.md.

One test per (attack, executor) the table says ``stops``: the attack runs
through ``repeatr run`` on that executor and must not get through. One test
per ``no`` cell: the attack does get through there, so the table tells the
truth about what is *not* stopped. And the table and the implementations
(``attacks.py``) list the same attacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import table
from .attacks import ATTACKS
from .conftest import Attacker, Lab, usable_executor

try:
    ROWS = table.load()
    TABLE_ERROR: table.TableError | None = None
except table.TableError as e:  # reported by test_table_parses, not as a collection error
    ROWS, TABLE_ERROR = [], e


def _cases(stops: bool) -> list[object]:
    return [
        pytest.param(ex, row.attack, id=f"{ex}-{row.attack}", marks=pytest.mark.runtime(ex))
        for row in ROWS
        for ex, cell in row.cells.items()
        if cell.stops is stops and row.attack in ATTACKS
    ]


@pytest.fixture
def attacker(lab: Lab, request: pytest.FixtureRequest) -> Iterator[Attacker]:
    executor = request.node.callspec.params["executor"]
    usable_executor(executor)
    a = Attacker(lab, executor, lab.new_dir(request.node.callspec.params["name"]))
    try:
        yield a
    finally:
        a.close()


def test_table_parses() -> None:
    assert TABLE_ERROR is None, f"docs/executors.md: {TABLE_ERROR}"
    assert ROWS


def test_table_and_attacks_match() -> None:
    listed = {row.attack for row in ROWS}
    assert sorted(listed - set(ATTACKS)) == [], "attacks in the table with no implementation"
    assert sorted(set(ATTACKS) - listed) == [], "attacks implemented but not in the table"


@pytest.mark.root
@pytest.mark.parametrize(("executor", "name"), _cases(True))
def test_stops(attacker: Attacker, executor: str, name: str) -> None:
    verdict = ATTACKS[name](attacker)
    assert verdict.stopped, f"{name} got through on {executor}: {verdict.evidence}"


@pytest.mark.root
@pytest.mark.parametrize(("executor", "name"), _cases(False))
def test_no_is_honest(attacker: Attacker, executor: str, name: str) -> None:
    verdict = ATTACKS[name](attacker)
    assert not verdict.stopped, (
        f"the table says {executor} does not stop {name}, but it did: {verdict.evidence}"
    )


def test_parse_rejects_bad_cells(tmp_path: Path) -> None:
    head = (
        f"{table.HEADING}\n\n| attack | what the job tries | chroot | ns | runc | crun | gvisor "
        "| vm |\n|---|---|---|---|---|---|---|---|\n"
    )
    good = head + "| `a` | x | stops | stops: why | no: shares the net | stops | stops | stops |\n"
    rows = table.parse(good)
    assert rows[0].cells["runc"] == table.Cell(False, "shares the net")
    assert rows[0].cells["ns"] == table.Cell(True, "why")
    for bad in (
        head + "| `a` | x | maybe | stops | stops | stops | stops | stops |\n",
        head + "| `a` | x | no | stops | stops | stops | stops | stops |\n",
        head + "| a | x | stops | stops | stops | stops | stops | stops |\n",
        head + "| `a` | x | stops | stops | stops | stops | stops |\n",
        head + "| `a` | x | stops | stops | stops | stops | stops | stops |\n"
        "| `a` | x | stops | stops | stops | stops | stops | stops |\n",
        "no heading\n",
    ):
        with pytest.raises(table.TableError):
            table.parse(bad)
