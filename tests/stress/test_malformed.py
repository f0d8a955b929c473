"""Malformed formulas and command lines: the right error, the right exit code, no side effect.

Each case is a formula file (or a command line) that must be refused before
anything happens: exit 1 (usage), a message naming the file and the field at
fault (where there is one), and the state dir exactly as it was (no work
dir, no cache entry, no memo record, nothing new at all).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category

from .conftest import Stress

pytestmark = [pytest.mark.root]

WARE = "tar:5oTfgeaKbXu5AAA7WiZ1VQmiTWYeYZEbGquYEVQ59fgn5K9wUU8W64bU9F18oaq5R5"


def doc(formula: dict[str, Any] | None = None, *, context: Any = None, **extra: Any) -> str:
    f: dict[str, Any] = {
        "inputs": {"/": WARE},
        "action": {"exec": ["/bin/true"]},
        "outputs": {"/out": {"packtype": "tar"}},
    }
    for key, value in (formula or {}).items():
        if isinstance(value, dict) and isinstance(f.get(key), dict):
            f[key] = {**f[key], **value}
        else:
            f[key] = value
    d: dict[str, Any] = {"formula": f, **extra}
    if context is not None:
        d["context"] = context
    return json.dumps(d)


def act(**fields: Any) -> str:
    return doc({"action": fields})


# (id, formula file text (None: see ``args``), extra args, words the message must hold)
CASES: list[tuple[str, str | None, tuple[str, ...], tuple[str, ...]]] = [
    ("bad-json", '{"formula": {"inputs": ', (), ()),
    ("not-an-object", "[1, 2]", (), ()),
    ("empty-file", "", (), ()),
    ("missing-formula", json.dumps({"context": {}}), (), ("formula",)),
    ("unknown-top-key", doc(bogus=1), (), ("bogus",)),
    ("unknown-formula-key", doc({"bogus": 1}), (), ("bogus",)),
    ("unknown-action-key", act(exec=["/bin/true"], enviroment={}), (), ("enviroment",)),
    ("unknown-userinfo-key", act(exec=["/bin/true"], userinfo={"uid": 0, "bogus": 1}), (), ("bogus",)),
    ("unknown-output-key", doc({"outputs": {"/out": {"packtype": "tar", "filter": {}}}}), (), ("filter",)),
    ("unknown-context-key", doc(context={"fetchUrl": {}}), (), ("fetchUrl",)),
    ("exec-not-a-list", act(exec="/bin/true"), (), ("formula.action.exec",)),
    ("uid-not-an-int", act(exec=["/bin/true"], userinfo={"uid": "me"}), (), ("formula.action.userinfo.uid",)),
    ("env-not-strings", act(exec=["/bin/true"], env={"A": 1}), (), ("formula.action.env",)),
    ("empty-exec", act(exec=[]), (), ("exec",)),
    ("relative-cwd", act(exec=["/bin/true"], cwd="task"), (), ("cwd",)),
    ("unknown-policy", act(exec=["/bin/true"], policy="admin"), (), ("policy",)),
    ("relative-input-path", doc({"inputs": {"/": WARE, "rel/path": WARE}}), (), ("rel/path",)),
    ("bad-ware-id", doc({"inputs": {"/": "tar:!!not-base58"}}), (), ("formula.inputs",)),
    ("unknown-ware-packtype", doc({"inputs": {"/": "zip:5oTfgeaKbXu5AAA7WiZ1VQmiT"}}), (), ("formula.inputs",)),
    ("bad-mount-mode", doc({"inputs": {"/": WARE, "/mnt": "mount:xx:/tmp"}}), (), ("/mnt",)),
    ("relative-mount-host-path", doc({"inputs": {"/": WARE, "/mnt": "mount:ro:tmp"}}), (), ("/mnt",)),
    ("relative-output-path", doc({"outputs": {"out": {"packtype": "tar"}}}), (), ("out",)),
    ("unknown-output-packtype", doc({"outputs": {"/out": {"packtype": "zip"}}}), (), ("packtype",)),
    ("bad-filter-value", doc({"outputs": {"/out": {"packtype": "tar", "filters": {"uid": "me"}}}}), (), ("uid",)),
    ("relative-fetch-path", doc(context={"fetchUrls": {"rel": ["ca+file:///x/"]}}), (), ("context.fetchUrls",)),
    ("bad-executor", doc(), ("--executor", "docker"), ("docker",)),
    ("missing-file", None, ("MISSING",), ()),
    ("directory", None, ("DIR",), ()),
    ("unreadable", None, ("/proc/self/mem",), ("/proc/self/mem",)),
]


def snapshot(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            found.append(f"{os.path.relpath(path, root)} {os.lstat(path).st_size}")
    return sorted(found)


@pytest.mark.parametrize(("text", "args", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["run", "check"])
def test_malformed_input_is_refused_without_side_effects(
    stress: Stress, command: str, text: str | None, args: tuple[str, ...], words: tuple[str, ...]
) -> None:
    # The state dir holds a real cache and memo from one good run first.
    good = stress.formula("true", name="good.json")
    assert stress.run("run", str(good), "-e", "ns").code == 0
    before = snapshot(stress.state)
    path = stress.dir / "formula.json"
    argv: list[str]
    if text is not None:
        path.write_text(text)
        argv = [command, str(path), *args]
        if not args:  # a command-line error names the option, not the file
            words = (str(path), *words)
    elif args == ("MISSING",):
        argv = [command, str(stress.dir / "nope.json")]
        words = (str(stress.dir / "nope.json"),)
    elif args == ("DIR",):
        argv = [command, str(stress.dir)]
        words = (str(stress.dir),)
    else:
        argv = [command, *args]
    res = stress.run(*argv)
    assert res.code == Category.USAGE, res.stderr
    for word in words:
        assert word in res.stderr, f"{word!r} not in: {res.stderr}"
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    assert snapshot(stress.state) == before
