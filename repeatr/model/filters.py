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
import re
from collections.abc import Mapping
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


# Patterns, compiled (and cached by ``re``) on first use: most runs parse no filter.
#: ASCII decimal digits with an optional ``+``, as Go's ``strconv.Atoi`` reads
#: them (``"+5"`` and ``"05"`` are 5). ``int()`` alone also takes "1_000",
#: " 12" and non-ASCII digits, which the original rejects. A ``-`` sign is
#: refused here: the original reads ``-1``/``-2`` as its internal "unset" and
#: "keep" markers and panics on any other negative number when hashing.
_DIGITS = r"\+?[0-9]+"
#: RFC 3339 as Go's ``time.RFC3339`` parses it: ``T`` and ``Z`` upper case,
#: optional fraction, a zone. ``fromisoformat`` alone accepts far more.
_RFC3339 = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)


def _bad(field: str, value: str, expected: str) -> UsageError:
    return UsageError(
        f"filter {field}: invalid value {value!r} (expected {expected})",
        category=Category.USAGE,
    )


def parse_mtime(value: str, field: str = "mtime") -> int | None:
    """``keep``/``follow`` -> None, ``@<unix>`` or RFC 3339 -> seconds.

    Times before 1970 are rejected: the original stores "keep" and "unset" as
    negative numbers and cannot represent them.
    """
    if value in ("keep", "follow"):
        return None
    expected = "keep, follow, @<unix seconds> or an RFC 3339 time"
    if value.startswith("@"):
        if not re.fullmatch(_DIGITS, value[1:]):
            raise _bad(field, value, expected)
        return int(value[1:])
    if not re.fullmatch(_RFC3339, value):
        raise _bad(field, value, expected + ", e.g. 2010-01-01T00:00:00Z")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, value, expected) from None
    seconds = int(stamp.timestamp())
    if seconds < 0:
        raise _bad(field, value, "a time no earlier than 1970-01-01T00:00:00Z")
    return seconds


def _parse_field(direction: Direction, field: str, value: str) -> object:
    keep_word = "keep" if direction == "pack" else "follow"
    if field in ("uid", "gid"):
        if value == keep_word:
            return "keep"
        if value == "mine" and direction == "unpack":
            return "mine"
        number = int(value) if re.fullmatch(_DIGITS, value) else -1
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
    direction: Direction,
    fields: Mapping[str, str],
    base: Filters | None = None,
    *,
    ignore_unknown: bool = False,
) -> Filters:
    """Build filters from the object form; fields set here win over ``base``.

    ``ignore_unknown``: skip keys that are not filter fields, as the
    original's formula parser did (a formula's output filters); otherwise
    an unknown key is a ``UsageError``.
    """
    result = base if base is not None else Filters()
    changes = {
        name: _parse_field(direction, name, value)
        for name, value in fields.items()
        if not (ignore_unknown and name not in FIELDS)
    }
    return result.replace(**changes)


def unknown_fields(fields: Mapping[str, str]) -> list[str]:
    """The keys of an object-form filter that are not filter fields."""
    return [name for name in fields if name not in FIELDS]


def _spell(direction: Direction, field: str, value: object) -> str:
    if value == "keep":
        return "keep" if direction == "pack" else "follow"
    if field == "mtime":
        return f"@{value}"
    return str(value)


def canonical_mapping(direction: Direction, fields: Mapping[str, str]) -> dict[str, str]:
    """The object form as the original hashed it: each field parsed, then re-spelt.

    The original (go-timeless-api ``FilesetPackFilter_AtlasEntry``) parses a
    formula's filter object into its filter struct and serialises that struct
    for the formula ID: ``uid``/``gid`` as a decimal number (``"01000"`` ->
    ``"1000"``), ``mtime`` as ``@<unix seconds>`` (an RFC 3339 time becomes
    ``"@1262304000"``), ``keep``/``follow`` and the words as they are. Keys
    it does not know are dropped. Raises ``UsageError`` for a bad value.
    """
    canonical: dict[str, str] = {}
    for name in FIELDS:
        if name in fields:
            value = _parse_field(direction, name, fields[name])
            if name == "mtime" and value is None:
                value = "keep"
            canonical[name] = _spell(direction, name, value)
    return canonical


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
        name = name.strip()
        if name in fields:
            raise UsageError(f"filter {name!r} given more than once in {text!r}")
        fields[name] = value.strip()
    return from_mapping(direction, fields, base)
