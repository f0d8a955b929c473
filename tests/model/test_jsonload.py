"""The original's JSON dialect (optional commas), its limits, and readable error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from repeatr.errors import Category, FormulaError
from repeatr.model.jsonload import (
    MAX_NESTING,
    SCAN_UP_TO,
    Key,
    decode,
    format_path,
    normalise,
    strip_trailing_commas,
)


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


# --- the original's dialect (refmt): optional commas ------------------------------

REACH = Path(__file__).parent.parent / "fixtures" / "reach"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1 2]", [1, 2]),
        ('{"a": 1 "b": 2}', {"a": 1, "b": 2}),
        ('["a""b"]', ["a", "b"]),
        ('{"a": {"b": 1}\n"c": [true false null]}', {"a": {"b": 1}, "c": [True, False, None]}),
        ('{"a": "x,}" "b": "\\"}"}', {"a": "x,}", "b": '"}'}),
        ("[[1] [2],]", [[1], [2]]),
    ],
)
def test_missing_commas_are_accepted_as_refmt_did(text: str, expected: object) -> None:
    assert decode(text.encode(), Any, "doc.json") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["[,1]", "[1,,2]", "{,}", '{"a": 1,,}', "[1] [2]", '{"a" 1}'])
def test_nothing_looser_than_refmt(text: str) -> None:
    with pytest.raises(FormulaError) as info:
        decode(text.encode(), Any, "doc.json")  # type: ignore[arg-type]
    assert info.value.category is Category.USAGE


def test_error_offsets_point_into_the_users_file_after_inserted_commas() -> None:
    with pytest.raises(FormulaError) as info:
        decode(b'[1 2 3\n 4 5 6 ?]', Any, "doc.json")  # type: ignore[arg-type]
    assert str(info.value).startswith("doc.json:2:8:")


@pytest.mark.parametrize("name", ["proj-bar.module.tl", "proj-baz.module.tl"])
def test_reach_modules_without_commas_read_as_with_them(name: str) -> None:
    """reach's own fixtures leave out a comma; they mean what the comma'd text means."""
    data = (REACH / name).read_bytes()
    with pytest.raises(ValueError):
        json.loads(data)  # really not plain JSON
    doc = decode(data, dict[str, Any], name)
    assert doc["imports"]["base"] == "catalog:froob.org/base:v1:linux-amd64"
    assert doc["imports"]["pipe"].startswith("catalog:example.org/proj-foo:")
    fixed = data.replace(b'linux-amd64"\n', b'linux-amd64",\n', 1)
    assert json.loads(fixed) == doc


def test_reach_module_in_plain_json_is_unchanged() -> None:
    data = (REACH / "hellomodule.module.tl").read_bytes()
    assert normalise(data).data == data
    assert decode(data, dict[str, Any], "module.tl") == json.loads(data)


# --- duplicate keys and nesting -------------------------------------------------


def test_duplicate_key_is_an_error_naming_key_and_place() -> None:
    data = b'{"items": {"a": {"n": 1},\n  "a": {"n": 2}}}'
    with pytest.raises(FormulaError) as info:
        decode(data, _Doc, "doc.json")
    assert str(info.value) == 'doc.json:2:3: items["a"]: duplicate key'


def test_duplicate_key_spelt_with_an_escape_is_still_a_duplicate() -> None:
    with pytest.raises(FormulaError) as info:
        decode(b'{"n": 1, "\\u006e": 2}', _Leaf, "doc.json")
    assert "n: duplicate key" in str(info.value)


def test_same_key_in_sibling_objects_is_fine() -> None:
    doc = decode(b'{"items": {"a": {"n": 1}, "b": {"n": 2}}}', _Doc, "doc.json")
    assert doc.items == {"a": _Leaf(1), "b": _Leaf(2)}


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_is_an_error_not_a_recursion_error(opener: bytes) -> None:
    with pytest.raises(FormulaError) as info:
        decode(opener * 100_000, Any, "doc.json")  # type: ignore[arg-type]
    assert f"nested more than {MAX_NESTING} levels deep" in str(info.value)


def test_nesting_up_to_the_limit_is_fine() -> None:
    data = b"[" * MAX_NESTING + b"]" * MAX_NESTING
    assert decode(data, Any, "doc.json") is not None  # type: ignore[arg-type]


def test_well_formed_json_one_level_too_deep_is_refused() -> None:
    data = b"[" * (MAX_NESTING + 1) + b"]" * (MAX_NESTING + 1)
    with pytest.raises(FormulaError) as info:
        decode(data, Any, "doc.json")  # type: ignore[arg-type]
    assert str(info.value) == f"doc.json:1:{MAX_NESTING + 1}: nested more than {MAX_NESTING} levels deep"


# --- small files: the scanner alone; large ones: the json module's check first --------

#: Appended to a document, takes it over SCAN_UP_TO (trailing whitespace: same meaning,
#: same line and column for anything before it).
_LARGE = b" " * (SCAN_UP_TO + 1)


@pytest.mark.parametrize("pad", [b"", _LARGE], ids=["small", "large"])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"items": {"a": {"n": 1},\n  "a": {"n": 2}}}', 'doc.json:2:3: items["a"]: duplicate key'),
        (b'{"items": {"a": {"n": 1}, "\\u0061": {"n": 2}}}', 'doc.json:1:27: items["a"]: duplicate key'),
        (b'{"items": {"a": {"n": 1} "b": {"n": 2}} "x": 1}', "doc.json: x: unknown key"),
    ],
)
def test_small_and_large_files_get_the_same_errors(pad: bytes, data: bytes, message: str) -> None:
    with pytest.raises(FormulaError) as info:
        decode(data + pad, _Doc, "doc.json")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("pad", [b"", _LARGE], ids=["small", "large"])
def test_small_and_large_files_read_the_same(pad: bytes) -> None:
    plain = b'{"items": {"a": {"n": 1}, "b": {"n": 2}}}'
    dialect = b'{"items": {"a": {"n": 1} "b": {"n": 2},},}'
    expected = _Doc(items={"a": _Leaf(1), "b": _Leaf(2)})
    assert decode(plain + pad, _Doc, "doc.json") == expected
    assert decode(dialect + pad, _Doc, "doc.json") == expected


@pytest.mark.parametrize(("size", "imported"), [(200, False), (SCAN_UP_TO + 1, True)])
def test_only_a_large_file_imports_json(size: int, imported: bool) -> None:
    """A single run's formula (a few hundred bytes) is read without the json module."""
    code = (
        "import sys; from typing import Any; from repeatr.model.jsonload import decode;"
        f"decode(b'{{\"a\": 1}}' + b' ' * {size}, dict[str, Any], 'f.json');"
        "print('json' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(imported)
