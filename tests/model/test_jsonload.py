"""Trailing commas and readable error paths in the strict JSON loader."""

from __future__ import annotations

import json

import msgspec
import pytest

from repeatr.errors import Category, FormulaError
from repeatr.model.jsonload import Key, decode, format_path, strip_trailing_commas


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,}', {"a": 1}),
        ("[1, 2,]", [1, 2]),
        ('{"a": [1,\n\t],\n}', {"a": [1]}),
        ('{"a": {"b": [],},}', {"a": {"b": []}}),
        ('{"a": 1, "b": 2}', {"a": 1, "b": 2}),
    ],
)
def test_trailing_commas_are_accepted(text: str, expected: object) -> None:
    assert json.loads(strip_trailing_commas(text.encode())) == expected


@pytest.mark.parametrize(
    "value",
    ["a,}", "a,]", "x, }", 'quote \\" then ,}', "backslash \\\\", '\\\\\\",]'],
)
def test_strings_containing_comma_brace_survive(value: str) -> None:
    doc = f'{{"k": "{value}", "l": ["{value}",],}}'.encode()
    parsed = json.loads(strip_trailing_commas(doc))
    original = json.loads(f'"{value}"')
    assert parsed == {"k": original, "l": [original]}


def test_stripping_keeps_byte_offsets() -> None:
    doc = b'{"a": [1,],\n "b": 2,}'
    out = strip_trailing_commas(doc)
    assert len(out) == len(doc)
    assert out == b'{"a": [1 ],\n "b": 2 }'


def test_format_path() -> None:
    assert format_path(["formula", "outputs", Key("/out"), "filters", Key("uid")]) == (
        'formula.outputs["/out"].filters["uid"]'
    )
    assert format_path(["formula", "action", "exec", 2]) == "formula.action.exec[2]"
    assert format_path([]) == "(top level)"


class _Leaf(msgspec.Struct, forbid_unknown_fields=True):
    n: int


class _Doc(msgspec.Struct, forbid_unknown_fields=True):
    items: dict[str, _Leaf] | None = None


def test_map_key_is_found_for_errors_under_a_map() -> None:
    data = b'{"items": {"good": {"n": 1}, "bad": {"n": "x"}}}'
    with pytest.raises(FormulaError) as info:
        decode(data, _Doc, "doc.json")
    assert str(info.value) == 'doc.json: items["bad"].n: expected int, got str'
    assert info.value.category is Category.USAGE


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(FormulaError) as info:
        decode(b'{\n  "items" {}\n}', _Doc, "doc.json")
    assert str(info.value).startswith("doc.json:2:")


def test_check_problems_are_all_reported() -> None:
    def check(doc: _Doc) -> list[tuple[list[str | int], str]]:
        return [(["items", Key("a")], "first"), (["items", Key("b")], "second")]

    with pytest.raises(FormulaError) as info:
        decode(b'{"items": {}}', _Doc, "doc.json", check=check)
    assert str(info.value).splitlines() == [
        'doc.json: items["a"]: first',
        'doc.json: items["b"]: second',
    ]
