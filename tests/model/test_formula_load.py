"""Loading formula files: shape, strictness, validation, errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repeatr.errors import Category, FormulaError, UsageError
from repeatr.model import filters
from repeatr.model.formula import (
    Action,
    Formula,
    HostMount,
    Output,
    load_formula_bytes,
    load_formula_file,
    parse_input,
    warnings,
)
from repeatr.model.wareid import WareID

WARE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"

# The original's examples/hello.formula, trailing commas added.
HELLO = f"""{{
	"formula": {{
		"inputs": {{
			"/": "{WARE}",
		}},
		"action": {{
			"exec": ["/bin/echo", "hello world!"],
		}},
	}},
	"context": {{
		"fetchUrls": {{
			"/": [
				"file://../fixtures/busybash.tgz",
			],
		}},
	}},
}}
"""


def _load(doc: dict[str, object]) -> Formula:
    return load_formula_bytes(json.dumps(doc).encode(), "formula.json").formula


def _error(doc: dict[str, object] | bytes) -> FormulaError:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(FormulaError) as info:
        load_formula_bytes(data, "formula.json")
    assert info.value.category is Category.USAGE
    assert info.value.exit_code == 1
    return info.value


def _with_action(**action: object) -> dict[str, object]:
    return {"formula": {"action": {"exec": ["/bin/true"], **action}}}


def test_hello_formula_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "hello.formula"
    path.write_text(HELLO)
    ff = load_formula_file(path)
    assert ff.formula.inputs == {"/": WARE}
    assert ff.formula.action.exec == ("/bin/echo", "hello world!")
    assert ff.formula.outputs is None
    assert ff.context is not None
    assert ff.context.fetch_urls == {"/": ("file://../fixtures/busybash.tgz",)}
    assert ff.context.save_urls == {}


def test_string_value_with_comma_brace_survives_loading() -> None:
    data = HELLO.replace('"hello world!"', '"a,}b,]c"').encode()
    ff = load_formula_bytes(data, "x.formula")
    assert ff.formula.action.exec == ("/bin/echo", "a,}b,]c")


def test_all_action_fields() -> None:
    frm = _load(
        _with_action(
            policy="governor",
            cwd="/work",
            env={"A": "1"},
            userinfo={"uid": 0, "gid": 5, "username": "u", "homedir": "/h"},
            cradle="disable",
            hostname="box",
        )
    )
    action = frm.action
    assert (action.policy, action.cwd, action.cradle, action.hostname) == (
        "governor",
        "/work",
        "disable",
        "box",
    )
    assert action.env == {"A": "1"}
    assert action.userinfo is not None
    assert (action.userinfo.uid, action.userinfo.gid) == (0, 5)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(FormulaError) as info:
        load_formula_file(tmp_path / "nope.json")
    assert info.value.category is Category.USAGE
    assert "nope.json" in str(info.value)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"formula": {"action": {"exec": ["/x"]}}, "bogus": 1}, "bogus"),
        (_with_action(bogus=1), "formula.action.bogus"),
        (_with_action(userinfo={"uid": 1, "shell": "/bin/sh"}), "formula.action.userinfo.shell"),
        (
            {
                "formula": {
                    "action": {"exec": ["/x"]},
                    "outputs": {"/o": {"packtype": "tar", "x": 1}},
                }
            },
            'formula.outputs["/o"].x',
        ),
        (
            {"formula": {"action": {"exec": ["/x"]}}, "context": {"fetchurls": {}}},
            "context.fetchurls",
        ),
    ],
)
def test_unknown_keys_are_rejected_with_their_path(doc: dict[str, object], where: str) -> None:
    message = str(_error(doc))
    assert message.startswith(f"formula.json: {where}: unknown key")


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            _with_action(userinfo={"uid": "0"}),
            "formula.json: formula.action.userinfo.uid: expected int, got str",
        ),
        (
            {"formula": {"action": {"exec": "/bin/true"}}},
            "formula.json: formula.action.exec: expected array, got str",
        ),
        (
            {"formula": {"action": {"exec": ["/x", 3]}}},
            "formula.json: formula.action.exec[1]: expected str, got int",
        ),
        (
            {
                "formula": {
                    "action": {"exec": ["/x"]},
                    "outputs": {"/a": {"packtype": "tar"}, "/b": {}},
                }
            },
            'formula.json: formula.outputs["/b"].packtype: required key is missing',
        ),
        (
            {"formula": {"inputs": {"/": 5}, "action": {"exec": ["/x"]}}},
            'formula.json: formula.inputs["/"]: expected str, got int',
        ),
        ({"context": {}}, "formula.json: formula: required key is missing"),
    ],
)
def test_type_errors_name_the_field(doc: dict[str, object], expected: str) -> None:
    assert str(_error(doc)) == expected


def test_bad_policy_lists_choices() -> None:
    message = str(_error(_with_action(policy="root")))
    assert message.startswith("formula.json: formula.action.policy: invalid value 'root'")
    assert "'routine'" in message and "'sysad'" in message


def test_cradle_accepts_only_disable() -> None:
    assert _load(_with_action(cradle="")).action.cradle == ""
    assert str(_error(_with_action(cradle="off"))).startswith(
        "formula.json: formula.action.cradle: invalid value 'off'"
    )


def test_syntax_error_names_position() -> None:
    message = str(_error(b'{"formula":\n  {"action" {}}}'))
    assert message.startswith("formula.json:2:")


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (
            {"formula": {"inputs": {"rel": WARE}, "action": {"exec": ["/x"]}}},
            'formula.inputs["rel"]',
        ),
        (
            {"formula": {"inputs": {"/": "tar:abc"}, "action": {"exec": ["/x"]}}},
            'formula.inputs["/"]',
        ),
        (
            {"formula": {"inputs": {"/": "zip:abc"}, "action": {"exec": ["/x"]}}},
            'formula.inputs["/"]',
        ),
        (
            {"formula": {"inputs": {"/m": "mount:rx:/a"}, "action": {"exec": ["/x"]}}},
            'formula.inputs["/m"]',
        ),
        (
            {"formula": {"inputs": {"/m": "mount:ro:rel"}, "action": {"exec": ["/x"]}}},
            'formula.inputs["/m"]',
        ),
        (
            {"formula": {"inputs": {"/a/../b": WARE}, "action": {"exec": ["/x"]}}},
            'formula.inputs["/a/../b"]',
        ),
        (
            {"formula": {"action": {"exec": ["/x"]}, "outputs": {"out": {"packtype": "tar"}}}},
            'formula.outputs["out"]',
        ),
        (
            {"formula": {"action": {"exec": ["/x"]}, "outputs": {"/o": {"packtype": "zip"}}}},
            'formula.outputs["/o"].packtype',
        ),
        (
            {
                "formula": {
                    "action": {"exec": ["/x"]},
                    "outputs": {"/o": {"packtype": "tar", "filters": {"uid": "me"}}},
                }
            },
            'formula.outputs["/o"].filters["uid"]',
        ),
        (
            {
                "formula": {
                    "action": {"exec": ["/x"]},
                    "outputs": {"/o": {"packtype": "tar", "filters": {"uid": "follow"}}},
                }
            },
            'formula.outputs["/o"].filters["uid"]',
        ),
        (_with_action(env={"": "x"}), 'formula.action.env[""]'),
        (_with_action(env={"A=B": "x"}), 'formula.action.env["A=B"]'),
        (_with_action(cwd="task"), "formula.action.cwd"),
        (_with_action(userinfo={"uid": -1}), "formula.action.userinfo.uid"),
        (_with_action(userinfo={"gid": 2**32}), "formula.action.userinfo.gid"),
        (_with_action(userinfo={"homedir": "home"}), "formula.action.userinfo.homedir"),
        ({"formula": {"action": {}}}, "formula.action"),
        ({"formula": {"action": {"exec": ["/x"], "noop": True}}}, "formula.action"),
        (
            {"formula": {"action": {"exec": ["/x"]}}, "context": {"saveUrls": {"out": "file://x"}}},
            'context.saveUrls["out"]',
        ),
    ],
)
def test_semantic_errors_name_the_field(doc: dict[str, object], where: str) -> None:
    assert str(_error(doc)).startswith(f"formula.json: {where}: ")


def test_every_semantic_problem_is_reported() -> None:
    doc = {
        "formula": {
            "inputs": {"rel": WARE},
            "action": {"exec": ["/x"], "cwd": "nope"},
            "outputs": {"/o": {"packtype": "zip"}},
        }
    }
    assert len(str(_error(doc)).splitlines()) == 3


def test_mounts_are_input_values() -> None:
    frm = _load(
        {
            "formula": {
                "inputs": {"/": WARE, "/src": "mount:ro:/home/me/src", "/out": "mount:rw:/tmp/o"},
                "action": {"exec": ["/x"]},
            }
        }
    )
    sources = frm.input_sources()
    assert sources["/"] == WareID.parse(WARE)
    assert sources["/src"] == HostMount(writable=False, host_path="/home/me/src")
    assert sources["/out"] == HostMount(writable=True, host_path="/tmp/o")
    assert str(sources["/src"]) == "mount:ro:/home/me/src"


def test_parse_input_keeps_colons_in_mount_paths() -> None:
    assert parse_input("mount:rw:/a:b") == HostMount(writable=True, host_path="/a:b")


def test_output_filters_layer_on_pack_flatten() -> None:
    frm = _load(
        {
            "formula": {
                "action": {"exec": ["/x"]},
                "outputs": {
                    "/plain": {"packtype": "tar"},
                    "/keep": {
                        "packtype": "tar",
                        "filters": {"uid": "keep", "mtime": "2020-01-01T00:00:00Z"},
                    },
                    "/strict": {"packtype": "tar", "filters": {"setid": "reject", "dev": "ignore"}},
                },
            }
        }
    )
    assert frm.outputs is not None
    assert frm.outputs["/plain"].pack_filters() == filters.PACK_FLATTEN
    keep = frm.outputs["/keep"].pack_filters()
    assert keep == filters.PACK_FLATTEN.replace(uid="keep", mtime=1577836800)
    assert keep.gid == 1000
    strict = frm.outputs["/strict"].pack_filters()
    assert (strict.setid, strict.dev, strict.uid) == ("reject", "ignore", 1000)
    # The raw strings are kept for hashing.
    assert frm.outputs["/keep"].filters == {"uid": "keep", "mtime": "2020-01-01T00:00:00Z"}


def test_unknown_filter_keys_are_ignored_with_a_warning() -> None:
    # The original's parser read only the six fields it knew.
    frm = _load(
        {
            "formula": {
                "action": {"exec": ["/x"]},
                "outputs": {"/o": {"packtype": "tar", "filters": {"owner": "1", "uid": "5"}}},
            }
        }
    )
    assert frm.outputs is not None
    assert frm.outputs["/o"].pack_filters() == filters.PACK_FLATTEN.replace(uid=5)
    found = warnings(frm)
    assert len(found) == 1
    assert "'owner'" in found[0] and "/o" in found[0]
    assert warnings(_load({"formula": {"action": {"exec": ["/x"]}}})) == []


def test_structs_are_frozen() -> None:
    out = Output(packtype="tar")
    with pytest.raises(AttributeError):
        out.packtype = "tar-strict"  # type: ignore[misc]
    assert Action().exec == ()


def test_docs_example_loads() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "formula.md"
    text = docs.read_text()
    start = text.index("```json\n") + len("```json\n")
    example = text[start : text.index("```", start)]
    ff = load_formula_bytes(example.encode(), "docs/formula.md")
    assert ff.formula.outputs is not None
    assert ff.formula.outputs["/out"].pack_filters() == filters.PACK_FLATTEN
    assert ff.formula.input_sources()["/src"] == HostMount(False, "/home/me/project")


def test_ware_ids_are_parsed_once() -> None:
    assert WareID.parse(WARE) is WareID.parse(WARE)
    with pytest.raises(UsageError):
        WareID.parse("tar:notbase58!")
