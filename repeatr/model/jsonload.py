"""Strict JSON loading for hand-written files, with errors that name the field.

Two things msgspec does not do on its own:

* **Trailing commas.** The original Repeatr accepted ``,}`` and ``,]`` (its
  own example formulas have them). :func:`strip_trailing_commas` blanks such
  commas with a scanner that knows where strings are, so a value like
  ``"a,}"`` survives. The comma becomes a space rather than disappearing, so
  byte offsets in decode errors still point into the user's file.
* **Readable paths.** msgspec reports ``$.formula.outputs[...].packtype``;
  the ``[...]`` hides which map key was wrong. :func:`decode` finds the key by
  walking the raw document alongside the target type and reports
  ``formula.outputs["/out"].packtype``.

Every failure is a :class:`~repeatr.errors.FormulaError` (category USAGE) whose
message starts with the file name.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from repeatr.errors import FormulaError

T = TypeVar("T")

_WHITESPACE = b" \t\r\n"


def strip_trailing_commas(data: bytes) -> bytes:
    """Replace each comma that is followed (after whitespace) by ``}`` or ``]`` with a space.

    Strings are skipped, honouring backslash escapes, so commas inside string
    values are never touched. Everything else is left for the JSON decoder to
    judge.
    """
    out = bytearray(data)
    in_string = False
    escaped = False
    n = len(data)
    for i in range(n):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte == 0x2C:  # comma
            j = i + 1
            while j < n and data[j] in _WHITESPACE:
                j += 1
            if j < n and data[j] in b"}]":
                out[i] = 0x20
    return bytes(out)


# ---------------------------------------------------------------- error paths

# The patterns below are for error messages only: compiled (and cached by
# ``re``) when a formula first fails to load, not on every run.
_PATH_TOKEN = r"\.([^.\[]+)|\[(\d+)\]|\[\.\.\.\]"


def format_path(parts: list[str | int]) -> str:
    """``["formula", "outputs", "/out", "packtype"]`` -> ``formula.outputs["/out"].packtype``.

    Struct fields are plain strings; map keys are wrapped in :class:`Key`;
    list indexes are ints.
    """
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, Key):
            text += f"[{json.dumps(str(part), ensure_ascii=False)}]"
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


class Key(str):
    """A map key in a path (printed quoted, in brackets), as opposed to a field name."""

    __slots__ = ()


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _struct_field(tp: Any, encoded: str) -> msgspec.structs.FieldInfo | None:
    for info in msgspec.structs.fields(tp):
        if info.encode_name == encoded:
            return info
    return None


def _fails(value: object, tp: Any) -> bool:
    try:
        msgspec.convert(value, type=tp)
    except msgspec.ValidationError:
        return True
    return False


def _resolve(raw: object, tp: Any, msgspec_path: str) -> tuple[list[str | int], Any]:
    """Walk ``$.a[0][...].b`` over the raw document; return readable parts and the type there."""
    parts: list[str | int] = []
    for match in re.finditer(_PATH_TOKEN, msgspec_path.removeprefix("$")):
        field, index = match.group(1), match.group(2)
        tp = _unwrap_optional(tp)
        if field is not None:
            parts.append(field)
            info = _struct_field(tp, field) if _is_struct(tp) else None
            tp = info.type if info is not None else Any
            raw = raw.get(field) if isinstance(raw, dict) else None
        elif index is not None:
            parts.append(int(index))
            args = typing.get_args(tp)
            tp = args[0] if args else Any
            raw = raw[int(index)] if isinstance(raw, list) and int(index) < len(raw) else None
        else:  # [...]: a map value; find the key whose value fails
            args = typing.get_args(tp)
            value_tp = args[1] if len(args) == 2 else Any
            culprit: str | None = None
            if isinstance(raw, dict):
                for key, value in raw.items():
                    if not isinstance(key, str) or _fails(value, value_tp):
                        culprit = str(key)
                        break
            parts.append(Key(culprit) if culprit is not None else Key("?"))
            raw = raw.get(culprit) if isinstance(raw, dict) and culprit is not None else None
            tp = value_tp
    return parts, _unwrap_optional(tp)


_EXPECTED = r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`"
_UNKNOWN = r"Object contains unknown field `(?P<name>[^`]*)`"
_MISSING = r"Object missing required field `(?P<name>[^`]*)`"
_ENUM = r"Invalid enum value (?P<value>.*)"


def _rewrite(message: str, parts: list[str | int], tp: Any) -> tuple[list[str | int], str]:
    if m := re.fullmatch(_EXPECTED, message):
        # "int | null": null only ever means "absent", so don't suggest it.
        want = m["want"].removesuffix(" | null")
        return parts, f"expected {want}, got {m['got']}"
    if (m := re.fullmatch(_ENUM, message)) and typing.get_origin(tp) is typing.Literal:
        choices = ", ".join(repr(a) for a in typing.get_args(tp) if a != "")
        return parts, f"invalid value {m['value']} (expected one of: {choices})"
    if m := re.fullmatch(_UNKNOWN, message):
        known = ""
        if _is_struct(tp):
            names = ", ".join(f.encode_name for f in msgspec.structs.fields(tp))
            known = f" (known keys: {names})"
        return [*parts, m["name"]], f"unknown key{known}"
    if m := re.fullmatch(_MISSING, message):
        return [*parts, m["name"]], "required key is missing"
    return parts, message.replace("`", "'")[:1].lower() + message.replace("`", "'")[1:]


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


_BYTE_OFFSET = r"\s*\(byte (\d+)\)$"


def decode(
    data: bytes,
    tp: type[T],
    name: str,
    *,
    check: Callable[[T], list[tuple[list[str | int], str]]] | None = None,
) -> T:
    """Decode ``data`` (JSON, trailing commas allowed) into ``tp`` or raise ``FormulaError``.

    ``check`` runs semantic validation on the decoded value and returns
    ``(path parts, message)`` problems; all of them are reported together.
    """
    cleaned = strip_trailing_commas(data)
    try:
        raw = msgspec.json.decode(cleaned)
    except msgspec.DecodeError as exc:
        message = str(exc)
        where = ""
        if m := re.search(_BYTE_OFFSET, message):
            line, col = _line_col(cleaned, int(m.group(1)))
            where = f":{line}:{col}"
            message = message[: m.start()]
        raise FormulaError(f"{name}{where}: {message}") from exc
    try:
        value = msgspec.convert(raw, type=tp, strict=True)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).rpartition(" - at ")
        if not message:  # no path: an error about the whole document
            message, path = str(exc), "`$`"
        parts, at_tp = _resolve(raw, tp, path.strip("`"))
        parts, text = _rewrite(message, parts, at_tp)
        raise FormulaError(f"{name}: {format_path(parts)}: {text}") from exc
    if check is not None:
        problems = check(value)
        if problems:
            lines = [f"{name}: {format_path(parts)}: {text}" for parts, text in problems]
            raise FormulaError("\n".join(lines))
    return value
