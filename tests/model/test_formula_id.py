"""Formula IDs: the published vector, hand-checked CBOR, and golden values.

The golden IDs below pin our encoding so a refactor cannot silently change
published IDs. If a change to them is *intended* (it breaks every stored
memo and every ID users have recorded), regenerate them with

    .venv/bin/python -m tests.model.test_formula_id

and paste the printed table over ``GOLDEN``.
"""

from __future__ import annotations

import pytest

from repeatr.model.formula import Action, Context, Formula, FormulaFile, Output, UserInfo
from repeatr.model.formula_id import encode_formula, formula_id

WARE = "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"
WARE2 = "tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ"

# The original's examples/hello.formula and the ID in examples/hello.tcase.
# (spec/compat.md quotes the argv as "hello world" without the "!"; the
# published ID only reproduces with the "!" the original example has.)
HELLO = Formula(inputs={"/": WARE}, action=Action(exec=("/bin/echo", "hello world!")))
HELLO_ID = "AteQchZcX1WATj4rnwsmDf4Gqhe6To4CWLj4j8Ghdjd3Ab4DJ7Abk2tuBfG96jruT"

SAMPLES: dict[str, Formula] = {
    "outputs-and-filters": Formula(
        inputs={"/": WARE, "/src": WARE2},
        action=Action(exec=("/bin/sh", "-c", "make"), env={"CC": "gcc", "A": "1"}),
        outputs={
            "/out": Output(packtype="tar", filters={"uid": "keep", "mtime": "@0"}),
            "/logs": Output(packtype="tar"),
        },
    ),
    "cradle-disabled": Formula(
        inputs={"/": WARE},
        action=Action(exec=("/bin/true",), cradle="disable", env={"X": "y"}),
        outputs={},
    ),
    "everything": Formula(
        inputs={"/": WARE, "/host": "mount:ro:/etc"},
        action=Action(
            exec=("/bin/id",),
            policy="governor",
            cwd="/w",
            env={"PATH": "/bin"},
            userinfo=UserInfo(uid=0, gid=0),
            hostname="builder",
        ),
        outputs={"/w": Output(packtype="tar-strict", filters={"setid": "reject"})},
    ),
    "noop-no-inputs": Formula(action=Action(noop=True)),
    "git-input": Formula(
        inputs={"/": WARE, "/src": "git:" + "0123456789abcdef" * 2 + "01234567"},
        action=Action(exec=("/bin/true",)),
    ),
    # Written the way the original normalised before hashing: the same ID as
    # {"uid": "1000", "mtime": "@1262304000"} (see test_filters_normalised_...).
    "filters-unnormalised": Formula(
        inputs={"/": WARE},
        action=Action(exec=("/bin/true",)),
        outputs={
            "/out": Output(
                packtype="tar",
                filters={"mtime": "2010-01-01T00:00:00Z", "uid": "01000", "colour": "blue"},
            )
        },
    ),
}

GOLDEN: dict[str, str] = {
    "outputs-and-filters": "8v6ppFDZgLuNxWoj2PaxKHo1eQegE1p6wEbnW6A7eWRB7K9eHMY21XNDXghVUnYiZo",
    "cradle-disabled": "mhjDqngYh8zBnSNger8eQPufHydyhHNnR119GVL3WGVKg1jtJsqs68SVxsaScgjYJ",
    "everything": "4cUdYfgWFDCaDB4YtEjJPChSC4LbUzSXoxffGSVrKEPGqCU5dhw6vvUSUk4scAUq4b",
    "noop-no-inputs": "7mXbQFDzY43q8sMbUnbLRD4upK3FGgabE5npWzfedHJs9At43yZVDk7ysDV9p69xpS",
    "git-input": "3ipNXU2bNPj836UWmzFaA4vdkVyn7z6XYLhYrLYibpR95zmnJEKfeHnn6tJ9DX9AZ2",
    "filters-unnormalised": "9ZF4cSE4r8zh5ESMQ7doqZmTd7ZvgnaBBgMyL24eyh2sizb1c7dShYpBvbkv4gxryX",
}


def test_published_hello_vector() -> None:
    assert formula_id(HELLO) == HELLO_ID


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_ids(name: str) -> None:
    assert formula_id(SAMPLES[name]) == GOLDEN[name]


def test_encoding_by_hand() -> None:
    # Struct order, null for absent inputs, {} for empty outputs, noop as true,
    # uid 0 emitted, empty strings omitted; checked byte by byte.
    frm = Formula(
        action=Action(noop=True, userinfo=UserInfo(uid=0)),
        outputs={"/o": Output(packtype="tar")},
    )
    expected = (
        b"\xa3"
        + b"\x66inputs\xf6"
        + b"\x66action\xa2"
        + b"\x64noop\xf5"
        + b"\x68userinfo\xa1\x63uid\x00"
        + b"\x67outputs\xa1"
        + b"\x62/o\xa2\x68packtype\x63tar\x67filters\xa0"
    )
    assert encode_formula(frm) == expected


def test_filters_normalised_before_hashing_as_the_original_did() -> None:
    # The original's formula ID by its algorithm (spec/compat.md), by hand:
    # go-timeless-api hashes its parsed filter struct re-serialised, so the
    # filters map holds "1000" and "@1262304000", and no unknown key.
    def one_output(filters: dict[str, str]) -> Formula:
        return Formula(
            action=Action(noop=True, cradle="disable"),
            outputs={"/o": Output(packtype="tar", filters=filters)},
        )

    expected = (
        b"\xa3"
        + b"\x66inputs\xf6"
        + b"\x66action\xa2\x64noop\xf5\x66cradle\x67disable"
        + b"\x67outputs\xa1"
        + b"\x62/o\xa2\x68packtype\x63tar\x67filters\xa2"
        + b"\x65mtime\x6b@1262304000"
        + b"\x63uid\x641000"
    )
    written = one_output({"mtime": "2010-01-01T00:00:00Z", "uid": "01000", "owner": "me"})
    assert encode_formula(written) == expected
    canonical = one_output({"uid": "1000", "mtime": "@1262304000"})
    assert formula_id(written) == formula_id(canonical)
    assert GOLDEN["filters-unnormalised"] == formula_id(
        Formula(
            inputs={"/": WARE},
            action=Action(exec=("/bin/true",)),
            outputs={"/out": Output(packtype="tar", filters={"uid": "1000", "mtime": "@1262304000"})},
        )
    )


def test_git_and_zip_inputs_hash_as_their_text() -> None:
    # The original hashed a ware ID as its text, whatever the packtype: a
    # formula with a git input has an ID (it used to fail to parse).
    commit = "git:" + "0123456789abcdef" * 2 + "01234567"
    frm = Formula(inputs={"/src": commit}, action=Action(noop=True, cradle="disable"))
    expected = (
        b"\xa3"
        + b"\x66inputs\xa1\x64/src\x78\x2c" + commit.encode()
        + b"\x66action\xa2\x64noop\xf5\x66cradle\x67disable"
        + b"\x67outputs\xf6"
    )
    assert encode_formula(frm) == expected
    assert GOLDEN["git-input"] == formula_id(SAMPLES["git-input"])


def test_map_keys_sort_bytewise_and_filters_are_sorted() -> None:
    frm = Formula(
        action=Action(env={"b": "", "B": "", "a": ""}),
        outputs={"/o": Output(packtype="tar", filters={"uid": "1", "gid": "2"})},
    )
    raw = encode_formula(frm)
    assert raw.index(b"\x61B") < raw.index(b"\x61a") < raw.index(b"\x61b")
    assert raw.index(b"gid") < raw.index(b"uid")


def test_defaults_are_applied_before_hashing() -> None:
    explicit = Formula(
        inputs={"/": WARE},
        action=Action(
            exec=("/bin/echo", "hello world!"),
            cwd="/task",
            env={
                "HOME": "/home/reuser",
                "USER": "reuser",
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            },
            userinfo=UserInfo(uid=1000, gid=1000, username="reuser", homedir="/home/reuser"),
        ),
    )
    assert formula_id(explicit) == HELLO_ID


def test_context_is_not_hashed() -> None:
    ff = FormulaFile(formula=HELLO, context=Context(save_urls={"/": "file://x"}))
    assert formula_id(ff.formula) == HELLO_ID


def test_absent_and_empty_maps_differ_where_the_original_did() -> None:
    assert formula_id(Formula(inputs={}, action=HELLO.action)) != formula_id(
        Formula(action=HELLO.action)
    )
    assert formula_id(Formula(inputs=HELLO.inputs, action=HELLO.action, outputs={})) != HELLO_ID
    # env {} and absent env are the same (omitempty).
    empty_env = Action(exec=HELLO.action.exec, cradle="disable", env={})
    no_env = Action(exec=HELLO.action.exec, cradle="disable")
    assert formula_id(Formula(action=empty_env)) == formula_id(Formula(action=no_env))


def test_every_hashed_field_changes_the_id() -> None:
    base = SAMPLES["everything"]
    variants = [
        Formula(inputs={"/": WARE2}, action=base.action, outputs=base.outputs),
        Formula(inputs=base.inputs, action=Action(exec=("/bin/id", "-u")), outputs=base.outputs),
        Formula(
            inputs=base.inputs, action=base.action, outputs={"/w": Output(packtype="tar-strict")}
        ),
        Formula(inputs=base.inputs, action=base.action, outputs=None),
    ]
    ids = {formula_id(f) for f in variants} | {formula_id(base)}
    assert len(ids) == len(variants) + 1


def _regenerate() -> None:
    print("GOLDEN: dict[str, str] = {")
    for name in SAMPLES:
        print(f'    "{name}": "{formula_id(SAMPLES[name])}",')
    print("}")


if __name__ == "__main__":
    _regenerate()
