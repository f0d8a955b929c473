"""``repeatr.cli.entry.import_msgspec``: msgspec without typing_extensions and platform,
and both still the real thing for whoever imports them afterwards."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
from repeatr.cli.entry import import_msgspec
import_msgspec()
import msgspec
loaded = sorted(m for m in ("typing_extensions", "platform", "inspect") if m in sys.modules)
assert not loaded, loaded

import platform, typing_extensions
assert platform.python_version() == "%d.%d.%d" % sys.version_info[:3]
assert typing_extensions.__file__

# msgspec's type handling with typing's fallbacks: a TypedDict's NotRequired key
# (typing_extensions' is typing's on 3.11+), an Annotated constraint, a Struct.
from typing import Annotated
from typing_extensions import NotRequired, TypedDict

class Doc(TypedDict):
    a: int
    b: NotRequired[str]

class S(msgspec.Struct):
    n: Annotated[int, msgspec.Meta(ge=0)]
    doc: Doc

s = msgspec.json.decode(b'{"n": 1, "doc": {"a": 2}}', type=S)
assert s.doc == {"a": 2}, s
try:
    msgspec.json.decode(b'{"n": -1, "doc": {"a": 2}}', type=S)
except msgspec.ValidationError:
    pass
else:
    raise AssertionError("Annotated constraint ignored")
try:
    msgspec.json.decode(b'{"n": 1, "doc": {}}', type=S)
except msgspec.ValidationError:
    pass
else:
    raise AssertionError("required key not required")
import uuid
assert uuid._LINUX
print("ok")
"""


def test_msgspec_imported_lean_and_whole() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
