"""The small subset of canonical CBOR (RFC 8949) that the original's hashes use.

Shortest-form heads, definite-length maps and arrays (plus the one
indefinite-length array the tree hash needs), text and byte strings, ints,
null and bools. Map key order is the caller's: struct-like maps keep a fixed
field order, dict-like maps are sorted bytewise by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable

# Major types (RFC 8949 §3.1).
_UINT = 0
_NEGINT = 1
_BYTES = 2
_TEXT = 3
_ARRAY = 4
_MAP = 5

NULL = b"\xf6"
TRUE = b"\xf5"
FALSE = b"\xf4"
INDEF_ARRAY_START = b"\x9f"
BREAK = b"\xff"


def head(major: int, value: int) -> bytes:
    """The initial byte(s) of an item: major type and shortest-form argument."""
    mt = major << 5
    if value < 24:
        return bytes((mt | value,))
    if value < 0x100:
        return bytes((mt | 24, value))
    if value < 0x10000:
        return bytes((mt | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((mt | 26,)) + value.to_bytes(4, "big")
    return bytes((mt | 27,)) + value.to_bytes(8, "big")


def enc_int(value: int) -> bytes:
    if value >= 0:
        return head(_UINT, value)
    return head(_NEGINT, -1 - value)


def enc_text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogateescape")
    return head(_TEXT, len(raw)) + raw


def enc_bytes(value: bytes) -> bytes:
    return head(_BYTES, len(value)) + value


def map_head(count: int) -> bytes:
    return head(_MAP, count)


def array_head(count: int) -> bytes:
    return head(_ARRAY, count)


def enc_text_map(items: Iterable[tuple[str, bytes]]) -> bytes:
    """A definite map of text keys to already-encoded values, in the given order."""
    pairs = list(items)
    return map_head(len(pairs)) + b"".join(enc_text(k) + v for k, v in pairs)


def enc_sorted_text_map(mapping: dict[str, bytes]) -> bytes:
    """A definite map with keys sorted bytewise by their UTF-8 form."""
    keys = sorted(mapping, key=lambda k: k.encode("utf-8", "surrogateescape"))
    return enc_text_map((k, mapping[k]) for k in keys)
