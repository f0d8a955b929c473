"""module.tl: the original's serialization vectors, its dialect, refs, and module names."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category, FormulaError
from repeatr.module.model import (
    CatalogRef,
    IngestRef,
    Module,
    Operation,
    ParentRef,
    SlotRef,
    canonical_json,
    load_module_bytes,
    parse_import_ref,
)
from repeatr.module.names import module_name_problem

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reach"

# go-timeless-api moduleSerial_test.go: "exhilerating module should roundtrip".
EXHILARATING = """\
{
	"imports": null,
	"steps": {
		"stepBar": {
			"operation": {
				"inputs": null,
				"action": {},
				"outputs": {
					"slot": "/"
				}
			}
		},
		"stepFoo": {
			"operation": {
				"inputs": null,
				"action": {},
				"outputs": {
					"slot": "/"
				}
			}
		},
		"stepSub": {
			"module": {
				"imports": {
					"subx": "parent:stepFoo.slot"
				},
				"steps": {
					"deeper": {
						"module": {
							"imports": {
								"suby": "parent:subx"
							},
							"steps": {
								"rlydeep": {
									"operation": {
										"inputs": null,
										"action": {},
										"outputs": {
											"slot": "/"
										}
									}
								}
							},
							"exports": {
								"zowslot": "rlydeep.slot"
							}
						}
					},
					"midstep": {
						"operation": {
							"inputs": {
								"/": "deeper.zowslot"
							},
							"action": {},
							"outputs": {
								"slot": "/"
							}
						}
					}
				},
				"exports": {
					"wowslot": "midstep.slot"
				}
			}
		},
		"stepWub": {
			"operation": {
				"inputs": {
					"/": "stepSub.wowslot"
				},
				"action": {}
			}
		}
	}
}"""


def test_zero_module_roundtrips() -> None:
    zero = Module()
    assert canonical_json(zero, indent=False) == '{"imports":null,"steps":null}'
    assert load_module_bytes(b'{"imports":null,"steps":null}', "m") == zero
    assert load_module_bytes(b"{}", "m") == zero


def test_exhilarating_module_roundtrips() -> None:
    mod = load_module_bytes(EXHILARATING.encode(), "m")
    assert canonical_json(mod) == EXHILARATING
    steps = mod.steps or {}
    sub = steps["stepSub"]
    assert isinstance(sub, Module)
    assert sub.imports == {"subx": ParentRef(SlotRef("stepFoo", "slot"))}
    wub = steps["stepWub"]
    assert isinstance(wub, Operation)
    assert wub.inputs == {"/": SlotRef("stepSub", "wowslot")}
    assert wub.outputs == {}


def test_canonical_form_keeps_action_field_order_and_sorts_maps() -> None:
    mod = load_module_bytes(
        b'{"steps": {"s": {"operation": {"action": {"env": {"B": "2", "A": "1"},'
        b' "exec": ["/bin/true"]}, "inputs": {"/": "base"}}}}, "imports": {"base": "ingest:literal:tar:x"}}',
        "m",
    )
    text = canonical_json(mod, indent=False)
    assert '"action":{"exec":["/bin/true"],"env":{"A":"1","B":"2"}}' in text


def test_the_originals_files_parse_unchanged_missing_commas_included() -> None:
    bar = load_module_bytes((FIXTURES / "proj-bar.module.tl").read_bytes(), "proj-bar")
    assert bar.imports == {
        "base": CatalogRef("froob.org/base", "v1", "linux-amd64"),
        "pipe": CatalogRef("example.org/proj-foo", "candidate", "wowslot"),
    }
    hello = load_module_bytes((FIXTURES / "hellomodule.module.tl").read_bytes(), "hello")
    main = (hello.steps or {})["main"]
    assert isinstance(main, Operation)
    assert main.action.exec == ("/bin/bash", "-c", "echo hello | tee /task/out")
    assert main.outputs == {"out": "/task/out"}
    assert hello.exports == {"wowslot": SlotRef("main", "out")}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (b'{"imports": {}, "stepz": {}}', "stepz"),
        (b'{"steps": {"a": {"operation": {"action": {"exex": []}}}}}', 'steps["a"].operation.action.exex'),
        (b'{"steps": {"a": {"operation": {}, "module": {}}}}', 'steps["a"]'),
        (b'{"steps": {"a": {}}}', 'steps["a"]'),
        (b'{"steps": {"a.b": {"operation": {}}}}', 'steps["a.b"]'),
        (b'{"imports": {"x": "catalog:Bad..Name:v1:i"}}', 'imports["x"]'),
        (b'{"imports": {"x": "catalog:a:b:c:d"}}', 'imports["x"]'),
        (b'{"imports": {"x": "nonsense"}}', 'imports["x"]'),
        (b'{"imports": {"x": "ingest:svn:foo"}}', 'imports["x"]'),
        (b'{"imports": {"x": "ingest:git"}}', 'imports["x"]'),
        (b'{"steps": {"a": {"operation": {"inputs": {"rel": "x"}}}}}', 'inputs["rel"]'),
        (b'{"steps": {"a": {"operation": {"outputs": {"o": "rel"}}}}}', 'outputs["o"]'),
        (b'{"exports": {"e": ""}}', 'exports["e"]'),
        (b'{"exports": {"e": "a."}}', 'exports["e"]'),
    ],
)
def test_bad_files_name_the_file_and_the_field(text: bytes, where: str) -> None:
    with pytest.raises(FormulaError) as info:
        load_module_bytes(text, "dir/module.tl")
    assert info.value.category is Category.USAGE
    assert str(info.value).startswith("dir/module.tl")
    assert where in str(info.value)


def test_refs_split_as_the_original_splits_them() -> None:
    assert SlotRef.parse("x") == SlotRef("", "x")
    assert SlotRef.parse("s.y.z") == SlotRef("s", "y.z")
    assert parse_import_ref("catalog:a.org/b") == CatalogRef("a.org/b")
    assert parse_import_ref("catalog:a.org/b:v1") == CatalogRef("a.org/b", "v1")
    assert parse_import_ref("parent:s.y") == ParentRef(SlotRef("s", "y"))
    assert parse_import_ref("ingest:literal:mount:ro:/p") == IngestRef("literal", "mount:ro:/p")
    assert parse_import_ref("ingest:git:.:refs/heads/x") == IngestRef("git", ".:refs/heads/x")
    for text in ("catalog:a.org/b:v1:item", "parent:x", "ingest:pack:tar:./src"):
        assert str(parse_import_ref(text)) == text


_SEGMENT = (
    "a moduleName path segment must consist of lower case alphanumeric characters"
    " or '-' or '.', and must start and end with an alphanumeric character"
)
_SUBDOMAIN = (
    "must consist of lower case alphanumeric characters, '-' or '.',"
    " and must start and end with an alphanumeric character"
)


# go-timeless-api catalogValidation_test.go:TestModuleNameValidation
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", "a moduleName cannot be an empty string"),
        ("yes", None),
        ("yes.yes", None),
        ("yes.yes/yes", None),
        ("yes.yes/yes.yes", None),
        ("yes.yes/yes..yes", None),
        ("yes.yes/yes..yes/still", None),
        ("no..no", f"a moduleName {_SUBDOMAIN}"),
        ("no..no/narp", f"a moduleName first segment {_SUBDOMAIN}"),
        ("sure/../butno", _SEGMENT),
        ("sure/./alsono", _SEGMENT),
        ("sure/NoCasePlz", _SEGMENT),
        ("NoCaseDomains/nope", f"a moduleName first segment {_SUBDOMAIN}"),
        ("noskipping//anysegments", _SEGMENT),
        ("notrailing/", _SEGMENT),
        ("notrailing/never/", _SEGMENT),
    ],
)
def test_module_name_validation(name: str, error: str | None) -> None:
    assert module_name_problem(name) == error
