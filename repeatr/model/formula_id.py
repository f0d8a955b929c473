"""The formula ID ("setup hash"): ``base58(sha384(CBOR(formula after defaults)))``.

Byte-for-byte what the original's ``Formula.SetupHash`` produces through
refmt's CBOR encoder (go-timeless-api ``formula.go`` / ``formulaHashing.go``,
refmt ``obj/marshalMapWildcard.go``). The rules, each checked against the
published hello vector where it applies:

* **Defaults first.** The original hashes the formula after
  ``FormulaDefaults`` (repeatr ``executor/impl/*``: ``cradle.FormulaDefaults``
  runs before ``InitRunRecord``). :func:`formula_id` applies them itself, so
  an ID never depends on whether the caller remembered to.
* **Structs are definite-length maps in declaration order**, not sorted:
  formula = ``inputs``, ``action``, ``outputs``; action = ``exec``, ``noop``,
  ``policy``, ``cwd``, ``env``, ``userinfo``, ``cradle``, ``hostname``;
  userinfo = ``uid``, ``gid``, ``username``, ``homedir``; output =
  ``packtype``, ``filters``. Field names are lower-camel text keys.
* **Formula fields are never omitted:** an absent ``inputs`` or ``outputs``
  map is CBOR null (``0xf6``); an empty one is an empty map (``0xa0``).
* **Action and userinfo fields are omitted when empty** (Go ``omitempty``):
  exec with no elements, ``noop`` false, ``policy``/``cwd``/``cradle``/
  ``hostname`` empty strings, an env map with no entries, userinfo unset;
  userinfo's ``username``/``homedir`` when empty. ``uid``/``gid`` are pointers
  in the original, so 0 *is* emitted (as int 0); only unset is omitted.
  ``noop`` true is CBOR true (``0xf5``).
* **Maps** (inputs, env, outputs, filters) have their keys sorted bytewise by
  UTF-8 (Go string order), definite length.
* **Ware IDs and mounts** are text strings, exactly as written
  (``"tar:..."``, ``"mount:ro:/host"``).
* **Output filters**: the map of the fields the formula sets, normalised as
  the original's filter struct re-serialises them (``"01000"`` -> ``"1000"``,
  an RFC 3339 mtime -> ``"@<unix>"``; unknown keys dropped), keys sorted;
  absent filters encode as an empty map, never null
  (:func:`repeatr.model.filters.canonical_mapping`).
* **Integers** use the shortest CBOR head; negative ints major type 1.
* **The context is never hashed.**

New optional fields (``action.limits``, ...) must be emitted only when set, so
formulas without them keep their IDs (see ``repeatr.model.formula``).

* **``action.limits``** (ours, not the original's) comes after ``hostname``,
  only when set: a definite-length map of unsigned integers with only the
  limits set, in the order ``memory`` (bytes, after parsing ``"64M"``),
  ``pids``, ``cpu`` (millicores: ``round(cores * 1000)``), ``timeout``
  (milliseconds), ``disk`` (bytes); ``limits: {}`` is an empty map (``0xa0``). Integers, not
  CBOR floats, so ``1`` and ``1.0`` cores hash the same.
* **``action.network``** (ours) after ``limits``, only when set, as text;
  **``action.nameservers``** after it, only when set, as an array of text.
  An absent network means ``none``, but is not hashed as ``none``: absent
  keeps the original's ID.

Golden values live in ``tests/model/test_formula_id.py``; regenerate them on
purpose with ``.venv/bin/python -m tests.model.test_formula_id``.
"""

from __future__ import annotations

from repeatr.hashes import sha384
from repeatr.model import cbor
from repeatr.model.base58 import b58encode
from repeatr.model.defaults import apply_defaults
from repeatr.model.formula import Action, Formula, Output, UserInfo
from repeatr.model.limits import Limits


def _text_array(items: tuple[str, ...]) -> bytes:
    return cbor.array_head(len(items)) + b"".join(cbor.enc_text(s) for s in items)


def _text_map(mapping: dict[str, str]) -> bytes:
    return cbor.enc_sorted_text_map({k: cbor.enc_text(v) for k, v in mapping.items()})


def _userinfo(user: UserInfo) -> bytes:
    fields: list[tuple[str, bytes]] = []
    if user.uid is not None:
        fields.append(("uid", cbor.enc_int(user.uid)))
    if user.gid is not None:
        fields.append(("gid", cbor.enc_int(user.gid)))
    if user.username:
        fields.append(("username", cbor.enc_text(user.username)))
    if user.homedir:
        fields.append(("homedir", cbor.enc_text(user.homedir)))
    return cbor.enc_text_map(fields)


def _limits(limits: Limits) -> bytes:
    values = [
        ("memory", limits.memory_bytes()),
        ("pids", limits.pids),
        ("cpu", limits.cpu_millis()),
        ("timeout", limits.timeout_millis()),
        ("disk", limits.disk_bytes()),
    ]
    return cbor.enc_text_map([(k, cbor.enc_int(v)) for k, v in values if v is not None])


def _action(action: Action) -> bytes:
    fields: list[tuple[str, bytes]] = []
    if action.exec:
        fields.append(("exec", _text_array(action.exec)))
    if action.noop:
        fields.append(("noop", cbor.TRUE))
    if action.policy:
        fields.append(("policy", cbor.enc_text(action.policy)))
    if action.cwd:
        fields.append(("cwd", cbor.enc_text(action.cwd)))
    if action.env:
        fields.append(("env", _text_map(action.env)))
    if action.userinfo is not None:
        fields.append(("userinfo", _userinfo(action.userinfo)))
    if action.cradle:
        fields.append(("cradle", cbor.enc_text(action.cradle)))
    if action.hostname:
        fields.append(("hostname", cbor.enc_text(action.hostname)))
    # Fields added after the original's go here, each only when set.
    if action.limits is not None:
        fields.append(("limits", _limits(action.limits)))
    if action.network:
        fields.append(("network", cbor.enc_text(action.network)))
    if action.nameservers is not None:
        fields.append(("nameservers", _text_array(action.nameservers)))
    return cbor.enc_text_map(fields)


def _output(output: Output) -> bytes:
    from repeatr.model.filters import canonical_mapping  # only outputs need it

    return cbor.enc_text_map(
        [
            ("packtype", cbor.enc_text(output.packtype)),
            ("filters", _text_map(canonical_mapping("pack", output.filters or {}))),
        ]
    )


def encode_formula(frm: Formula) -> bytes:
    """The canonical CBOR of ``frm`` exactly as given (no defaults applied)."""
    inputs = cbor.NULL if frm.inputs is None else _text_map(frm.inputs)
    if frm.outputs is None:
        outputs = cbor.NULL
    else:
        outputs = cbor.enc_sorted_text_map({k: _output(v) for k, v in frm.outputs.items()})
    return cbor.enc_text_map(
        [("inputs", inputs), ("action", _action(frm.action)), ("outputs", outputs)]
    )


def formula_id(frm: Formula) -> str:
    """The formula ID of ``frm``: defaults applied, then hashed. The context is not an input."""
    digest = sha384(encode_formula(apply_defaults(frm))).digest()
    return b58encode(digest)
