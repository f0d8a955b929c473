"""action.network and action.nameservers: validated, and hashed only when present."""

from __future__ import annotations

import json

import pytest

from repeatr.errors import FormulaError
from repeatr.model.formula import load_formula_bytes
from repeatr.model.formula_id import formula_id

HELLO = {
    "inputs": {"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"},
    "action": {"exec": ["/bin/echo", "hello world!"]},
}
HELLO_ID = "AteQchZcX1WATj4rnwsmDf4Gqhe6To4CWLj4j8Ghdjd3Ab4DJ7Abk2tuBfG96jruT"


def _id(action_extra: dict[str, object]) -> str:
    doc = {"formula": {**HELLO, "action": {**HELLO["action"], **action_extra}}}  # type: ignore[dict-item]
    return formula_id(load_formula_bytes(json.dumps(doc).encode(), "f.json").formula)


def test_absent_network_keeps_the_original_id() -> None:
    assert _id({}) == HELLO_ID


def test_each_network_has_its_own_id() -> None:
    ids = {_id({"network": n}) for n in ("none", "host", "bridge")}
    assert len(ids) == 3 and HELLO_ID not in ids
    assert _id({"network": "bridge", "nameservers": ["192.0.2.1"]}) != _id({"network": "bridge"})


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"network": "wifi"}, "formula.action.network"),
        ({"network": "bridge", "nameservers": ["not-an-ip"]}, "formula.action.nameservers[0]"),
        ({"nameservers": ["192.0.2.1"]}, "formula.action.nameservers"),
    ],
)
def test_bad_network_fields_name_the_field(extra: dict[str, object], field: str) -> None:
    doc = {"formula": {**HELLO, "action": {**HELLO["action"], **extra}}}  # type: ignore[dict-item]
    with pytest.raises(FormulaError) as err:
        load_formula_bytes(json.dumps(doc).encode(), "f.json")
    assert field in str(err.value)
