"""JSON loading for hand-written files, in the original's dialect, with errors that name the field.

**The dialect.** The original Repeatr (and reach) read JSON with refmt
(polydawn/refmt at 26ba426, vendored by both at their last commits), whose
decoder makes the comma between two entries optional: after a value, a
``,`` may follow or not, then the next entry or the closing bracket. So
``[1 2]``, ``{"a": 1 "b": 2}`` and ``[1, 2,]`` were all read, and reach's
own ``examples/helloworkspace/example.org/proj-{bar,baz}/module.tl`` rely on
the missing comma. :func:`normalise` accepts exactly that and nothing
looser: a comma before the first entry (``[,1]``), two commas in a row
(``[1,,2]``) and everything else plain JSON refuses stay errors. (refmt was
laxer still where it had FIXMEs: ``nope`` read as ``null``; and the
original read one value and ignored whatever followed it. No formula
relies on either, both hide typos, and we accept neither. Strings are as
strict in refmt as in JSON: no raw control characters, only JSON's escapes.)

Two rules are ours, not refmt's:

* **Duplicate keys are an error.** refmt let the last one win, silently
  (``SetMapIndex`` / a struct field set twice); a formula whose ``env``
  names a variable twice almost certainly has a mistake in it, and which
  value the job got was invisible. The error names the key, its line and
  column. (A formula with a duplicate key was already ambiguous to read; it
  is refused rather than given a different meaning.)
* **Nesting is limited** to :data:`MAX_NESTING` levels (refmt had no limit;
  the deepest of the original's files is 8), so a hostile document gets an
  error naming where, not a ``RecursionError``.

:func:`normalise` turns the dialect into plain JSON for msgspec: it inserts
each missing comma and blanks each trailing one (a space, so offsets stay).
A scanner that knows where strings are does this, so a value like ``"a,}"``
survives; offsets in decode errors are mapped back to the user's file.

**Readable paths.** msgspec reports ``$.formula.outputs[...].packtype``; the
``[...]`` hides which map key was wrong. :func:`decode` finds the key by
walking the raw document alongside the target type and reports
``formula.outputs["/out"].packtype``.

Every failure is a :class:`~repeatr.errors.FormulaError` (category USAGE) whose
message starts with the file name.
"""

from __future__ import annotations

import bisect
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from repeatr.errors import FormulaError

T = TypeVar("T")

#: Deepest nesting of arrays and objects accepted. The original's formulas and
#: reach's modules nest at most 8 deep; msgspec and the path walk recurse.
MAX_NESTING = 100

# One token, after optional whitespace: a whole string (escapes honoured), a
# structural byte, or a bare scalar (numbers and literals; msgspec judges
# their spelling). Anything else stops the scan and is left to msgspec.
# Compiled on first use (``re`` keeps it), not at import: a command that reads
# no formula never pays for it (the first scan, compiling it, ~0.3 ms).
_TOKEN = (
    rb'[ \t\r\n]*(?:(?P<str>"[^"\\]*(?:\\.[^"\\]*)*")|(?P<op>[][{}:,])'
    rb"|(?P<scalar>[-0-9A-Za-z+.]+))"
)


#: Files up to this size (bytes) go straight to the scanner of :func:`normalise`
#: (~0.5 us a byte: ~0.1 ms for a typical 200-byte formula); larger ones are
#: checked first by the json module's C scanner (:func:`_is_plain_and_clean`),
#: whose import costs ~2 ms, as much as scanning 4 KiB: a single run's formula
#: is read without importing json.
SCAN_UP_TO = 4096


class DialectError(Exception):
    """A duplicate key or too deep a nesting, found by :func:`normalise`."""

    def __init__(self, offset: int, path: list[str | int] | None, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.path = path
        self.message = message


class Normalised(msgspec.Struct):
    """Plain JSON for msgspec, and where commas were inserted (to map offsets back).

    Structs, not dataclasses, here: defining a dataclass compiles its
    methods at import, ~1 ms each of every run's start-up.
    """

    data: bytes
    #: Offsets in ``data`` of the commas :func:`normalise` inserted, ascending.
    inserted: list[int] = msgspec.field(default_factory=list)

    def original_offset(self, offset: int) -> int:
        """The offset in the user's file of ``offset`` in :attr:`data`."""
        return offset - bisect.bisect_left(self.inserted, offset)


class _Frame(msgspec.Struct):
    is_object: bool
    #: "start" (just opened), "key" (after a comma in an object), "colon",
    #: "value", "after" (a complete entry), "comma" (after a comma in an array).
    state: str
    at: str | int | None = None
    keys: set[str] = msgspec.field(default_factory=set)
    index: int = -1
    comma: int = -1


def _key_text(token: bytes) -> str:
    if b"\\" not in token:
        return token[1:-1].decode("utf-8", "surrogateescape")
    try:
        value = msgspec.json.decode(token)
    except msgspec.DecodeError:  # a bad escape: msgspec will say so, in context
        return token.decode("utf-8", "surrogateescape")
    return str(value)


class _Duplicate(Exception):
    pass


def _pairs_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Duplicate
    return found


def _is_plain_and_clean(data: bytes) -> bool:
    """True when ``data`` is plain JSON without duplicate keys or deep nesting.

    For a large file (over :data:`SCAN_UP_TO`), decided at C speed (the json
    module's scanner) so that only files that need it (the dialect, or a
    problem to locate) go through the scanner of :func:`normalise`, which
    costs a few microseconds per token.
    """
    import json  # only for a file this large: see :data:`SCAN_UP_TO`

    try:
        doc = json.loads(data, object_pairs_hook=_pairs_without_duplicates)
    except (ValueError, RecursionError, _Duplicate):
        return False
    # Breadth first, one level of containers at a time. (A tuple, not
    # ``dict | list``: isinstance with a union is several times slower.)
    containers = (dict, list)
    level: list[dict[str, object] | list[object]] = [doc] if isinstance(doc, containers) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_NESTING:
            return False
        level = [
            child
            for node in level
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, containers)
        ]
    return True


def normalise(data: bytes) -> Normalised:
    """The original's JSON dialect (see module docstring) as plain JSON.

    Raises :class:`DialectError` for a duplicate key or nesting deeper than
    :data:`MAX_NESTING`. At anything else it does not understand it stops
    and leaves the rest as it is: plain JSON is a subset of the dialect, so
    msgspec refuses that spot too, and reports it.
    """
    if len(data) > SCAN_UP_TO and _is_plain_and_clean(data):
        return Normalised(data)
    inserts: list[int] = []  # original offsets: a comma goes before the byte there
    blanks: list[int] = []
    stack: list[_Frame] = []
    top_done = False
    pos = 0
    n = len(data)
    match = re.compile(_TOKEN, re.DOTALL).match
    while pos < n:
        m = match(data, pos)
        if m is None:
            break  # whitespace to the end, or a byte no token starts with
        start = m.start(m.lastgroup or 0)
        end = m.end()
        kind = m.lastgroup
        token = m.group(kind or 0)
        frame = stack[-1] if stack else None
        if kind == "op" and token in b"]}":
            if frame is None or frame.is_object != (token == b"}"):
                break
            if frame.state == "comma" or frame.state == "key":
                blanks.append(frame.comma)  # a trailing comma
            elif frame.state not in ("start", "after"):
                break
            stack.pop()
            if stack:
                stack[-1].state = "after"
            else:
                top_done = True
            pos = end
            continue
        if kind == "op" and token == b",":
            if frame is None or frame.state != "after":
                break
            frame.state = "key" if frame.is_object else "comma"
            frame.comma = start
            pos = end
            continue
        if kind == "op" and token == b":":
            if frame is None or frame.state != "colon":
                break
            frame.state = "value"
            pos = end
            continue
        # A value (or, in an object, a key).
        if frame is None:
            if top_done:
                break
        elif frame.is_object and frame.state in ("start", "key", "after"):
            if kind != "str":
                break
            if frame.state == "after":
                inserts.append(start)  # the comma refmt let you leave out
            key = _key_text(token)
            if key in frame.keys:
                raise DialectError(start, _path(stack, key), "duplicate key")
            frame.keys.add(key)
            frame.at = key
            frame.state = "colon"
            pos = end
            continue
        elif frame.is_object and frame.state != "value":
            break
        elif not frame.is_object:
            if frame.state == "after":
                inserts.append(start)
            frame.index += 1
            frame.at = frame.index
        if frame is not None:
            frame.state = "after"
        if kind == "op":  # "{" or "["
            if len(stack) >= MAX_NESTING:
                # No path: it would be a hundred levels long.
                raise DialectError(start, None, f"nested more than {MAX_NESTING} levels deep")
            stack.append(_Frame(is_object=token == b"{", state="start"))
        elif frame is None:
            top_done = True
        pos = end
    if not inserts and not blanks:
        return Normalised(data)
    out = bytearray(data)
    for offset in blanks:
        out[offset] = 0x20
    inserted = []
    for k, offset in enumerate(inserts):
        inserted.append(offset + k)
    for offset in reversed(inserts):
        out[offset:offset] = b","
    return Normalised(bytes(out), inserted)


def _path(stack: list[_Frame], key: str) -> list[str | int]:
    """Where the innermost object's ``key`` is."""
    parts: list[str | int] = [frame.at for frame in stack[:-1] if frame.at is not None]
    parts.append(key)
    return parts


def strip_trailing_commas(data: bytes) -> bytes:
    """``data`` in plain JSON (see :func:`normalise`); kept for callers that want bytes."""
    return normalise(data).data


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
            import json  # an error's message: not worth importing up front

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


def _typed_path(tp: Any, raw_parts: list[str | int]) -> list[str | int]:
    """Raw keys and indexes as :func:`format_path` parts: struct fields plain, map keys quoted."""
    parts: list[str | int] = []
    for part in raw_parts:
        tp = _unwrap_optional(tp)
        if isinstance(part, int):
            parts.append(part)
            args = typing.get_args(tp)
            tp = args[0] if args else Any
        elif _is_struct(tp):
            info = _struct_field(tp, part)
            parts.append(part)
            tp = info.type if info is not None else Any
        else:
            parts.append(Key(part))
            args = typing.get_args(tp)
            tp = args[1] if len(args) == 2 else Any
    return parts


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
    """Decode ``data`` (the original's JSON dialect) into ``tp`` or raise ``FormulaError``.

    ``check`` runs semantic validation on the decoded value and returns
    ``(path parts, message)`` problems; all of them are reported together.
    """
    try:
        plain = normalise(data)
    except DialectError as exc:
        line, col = _line_col(data, exc.offset)
        where = "" if exc.path is None else f" {format_path(_typed_path(tp, exc.path))}:"
        raise FormulaError(f"{name}:{line}:{col}:{where} {exc.message}") from None
    try:
        raw = msgspec.json.decode(plain.data)
    except msgspec.DecodeError as exc:
        message = str(exc)
        where = ""
        if m := re.search(_BYTE_OFFSET, message):
            line, col = _line_col(data, plain.original_offset(int(m.group(1))))
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
