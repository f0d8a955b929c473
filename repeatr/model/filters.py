"""Filters: how metadata is normalised when packing or unpacking a fileset.

A filter has the same six fields in both directions; only the spelling of
"leave it alone" differs (``keep`` when packing, ``follow`` when unpacking).
Internally both become ``"keep"``. ``mine`` (unpack only) means the uid/gid of
the process doing the unpack.

Two spellings on the outside: an object in formulas
(``{"uid": "1000", "mtime": "@1262304000"}``) and a string on the command
line (``uid=1000,gid=1000,mtime=@1262304000``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from repeatr.errors import Category, UsageError

Direction = Literal["pack", "unpack"]
IdRule = int | Literal["keep", "mine"]
BitRule = Literal["keep", "ignore"]
TriRule = Literal["keep", "ignore", "reject"]

#: 2010-01-01T00:00:00Z, the original's default mtime.
DEFAULT_MTIME = 1262304000

FIELDS = ("uid", "gid", "mtime", "sticky", "setid", "dev")


@dataclass(frozen=True, slots=True)
class Filters:
    uid: IdRule = "keep"
    gid: IdRule = "keep"
    mtime: int | None = None  # None keeps the entry's mtime
    sticky: BitRule = "keep"
    setid: TriRule = "keep"
    dev: TriRule = "keep"

    def replace(self, **changes: object) -> Filters:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


PACK_FLATTEN = Filters(uid=1000, gid=1000, mtime=DEFAULT_MTIME)
PACK_CONSERVATIVE = PACK_FLATTEN.replace(setid="reject", dev="reject")
UNPACK_LOSSLESS = Filters()
UNPACK_LOWPRIV = Filters(uid="mine", gid="mine", setid="reject", dev="reject")

PRESETS: dict[tuple[Direction, str], Filters] = {
    ("pack", "flatten"): PACK_FLATTEN,
    ("pack", "conservative"): PACK_CONSERVATIVE,
    ("unpack", "lossless"): UNPACK_LOSSLESS,
    ("unpack", "low-priv"): UNPACK_LOWPRIV,
    ("unpack", "lowpriv"): UNPACK_LOWPRIV,
}


def _bad(field: str, value: str, expected: str) -> UsageError:
    return UsageError(
        f"filter {field}: invalid value {value!r} (expected {expected})",
        category=Category.USAGE,
    )


def parse_mtime(value: str, field: str = "mtime") -> int | None:
    """``keep``/``follow`` -> None, ``@<unix>`` or RFC 3339 -> seconds."""
    if value in ("keep", "follow"):
        return None
    if value.startswith("@"):
        try:
            return int(value[1:])
        except ValueError:
            raise _bad(field, value, "keep, follow, @<unix seconds> or an RFC 3339 time") from None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, value, "keep, follow, @<unix seconds> or an RFC 3339 time") from None
    if stamp.tzinfo is None:
        raise _bad(field, value, "an RFC 3339 time with a zone, e.g. 2010-01-01T00:00:00Z")
    return int(stamp.timestamp())


def _parse_field(direction: Direction, field: str, value: str) -> object:
    keep_word = "keep" if direction == "pack" else "follow"
    if field in ("uid", "gid"):
        if value == keep_word:
            return "keep"
        if value == "mine" and direction == "unpack":
            return "mine"
        try:
            number = int(value)
        except ValueError:
            number = -1
        if number < 0:
            extra = ", mine" if direction == "unpack" else ""
            raise _bad(field, value, f"{keep_word}{extra} or a non-negative number")
        return number
    if field == "mtime":
        if value == ("follow" if direction == "pack" else "keep"):
            raise _bad(field, value, f"{keep_word}, @<unix seconds> or an RFC 3339 time")
        return parse_mtime(value)
    if field == "sticky":
        if value == keep_word:
            return "keep"
        if value == "ignore":
            return "ignore"
        raise _bad(field, value, f"{keep_word} or ignore")
    if field in ("setid", "dev"):
        if value == keep_word:
            return "keep"
        if value in ("ignore", "reject"):
            return value
        raise _bad(field, value, f"{keep_word}, ignore or reject")
    raise UsageError(f"unknown filter field {field!r} (known: {', '.join(FIELDS)})")


def from_mapping(
    direction: Direction, fields: dict[str, str], base: Filters | None = None
) -> Filters:
    """Build filters from the object form; fields set here win over ``base``."""
    result = base if base is not None else Filters()
    changes = {name: _parse_field(direction, name, value) for name, value in fields.items()}
    return result.replace(**changes)


def parse(direction: Direction, text: str, base: Filters | None = None) -> Filters:
    """Parse the command-line form: a preset name, or ``k=v,k=v``.

    ``base`` is the default the given fields are layered on (a bare preset
    name replaces it).
    """
    text = text.strip()
    preset = PRESETS.get((direction, text))
    if preset is not None:
        return preset
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            presets = ", ".join(n for d, n in PRESETS if d == direction)
            raise UsageError(
                f"filter {part!r}: expected field=value or a preset ({presets})"
            )
        fields[name.strip()] = value.strip()
    return from_mapping(direction, fields, base)
