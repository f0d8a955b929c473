"""The table "What each executor stops" in docs/executors.md, as data.

One row per attack: its name (in backticks, first column), what the job
tries, then one cell per executor: ``stops`` (optionally ``stops: why``)
or ``no: why``. The attack suite is generated from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from repeatr.executors.base import ExecutorName

DOC = Path(__file__).resolve().parents[2] / "docs" / "executors.md"
HEADING = "## What each executor stops"


@dataclass(frozen=True)
class Cell:
    stops: bool
    why: str


@dataclass(frozen=True)
class Row:
    attack: str
    tries: str
    cells: dict[str, Cell]


class TableError(ValueError):
    pass


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _cell(text: str, where: str) -> Cell:
    word, _, why = text.partition(":")
    word = word.strip()
    if word not in ("stops", "no"):
        raise TableError(f"{where}: a cell is `stops` or `no: why`, not {text!r}")
    if word == "no" and not why.strip():
        raise TableError(f"{where}: a `no` cell says why")
    return Cell(word == "stops", why.strip())


def parse(text: str) -> list[Row]:
    lines = text.splitlines()
    try:
        start = lines.index(HEADING)
    except ValueError:
        raise TableError(f"no section {HEADING!r}") from None
    table = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    if len(table) < 3:
        raise TableError("the section has no table")
    header = _split(table[0])
    executors = [str(n) for n in ExecutorName]
    if header[:2] != ["attack", "what the job tries"] or header[2:] != executors:
        raise TableError(f"header must be attack, what the job tries, {', '.join(executors)}: {header}")
    rows = []
    for line in table[2:]:
        cols = _split(line)
        if len(cols) != len(header):
            raise TableError(f"row has {len(cols)} columns, not {len(header)}: {line}")
        m = re.fullmatch(r"`([a-z0-9-]+)`", cols[0])
        if m is None:
            raise TableError(f"the first column is the attack's name in backticks: {cols[0]!r}")
        name = m.group(1)
        cells = {ex: _cell(c, f"{name}/{ex}") for ex, c in zip(executors, cols[2:], strict=True)}
        rows.append(Row(name, cols[1], cells))
    names = [r.attack for r in rows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TableError(f"attacks listed twice: {dupes}")
    return rows


def load() -> list[Row]:
    return parse(DOC.read_text())
