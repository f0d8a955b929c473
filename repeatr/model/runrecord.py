"""The run record: what one run produced, printed as JSON on stdout.

Keys, in this order: ``guid``, ``time`` (unix seconds at start),
``formulaID``, ``exitCode`` (-1 until the process ends; 128+N when killed by
signal N), ``results`` (output path -> ware ID), then ``hostname`` and
``metadata`` only when set (spec/compat.md). Our own additions (executor,
isolation, limits) will follow as optional fields after these, omitted when
unset, so a record from a run that does not use them looks like the
original's.

Printed as the original's printers did (go-timeless-api
``repeatr/fmt``: refmt's JSON encoder with ``Indent: "    "``, a newline
after the closing brace): four spaces per level, ``{}`` for an empty map.
``hostname`` is the host that ran the job (the original's ``os.Hostname()``:
"not a trusted field, but useful for debugging"), not the container's.
"""

from __future__ import annotations

import os
import time as _time

import msgspec

#: The original's guid alphabet: base32 without i, j, l, u.
GUID_ALPHABET = "0123456789abcdefghkmnopqrstvwxyz"
_TIME_CHARS = 8
_RANDOM_CHARS = 16


class RunRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    guid: str
    time: int
    formula_id: str = msgspec.field(name="formulaID")
    exit_code: int = msgspec.field(name="exitCode")
    results: dict[str, str]
    hostname: str = ""
    metadata: dict[str, str] | None = None
    # Our additions go here, each optional and omitted when unset.
    #: The executor that ran the job, what it isolated, and the limits enforced.
    executor: str = ""
    isolation: tuple[str, ...] | None = None
    limits: dict[str, int | float] | None = None
    #: The network the job had ("none", "host", "bridge") and its address on a bridge.
    network: str = ""
    address: str = ""
    #: Why the job was stopped when repeatr's limits stopped it ("timeout", "out of memory").
    stopped: str = ""


def new_guid(now_ms: int | None = None) -> str:
    """``tttttttt-rrrrrrrr-rrrrrrrr``: 8 base32 chars of the time, then 16 random ones.

    The time part is the low 40 bits of the unix time in milliseconds, most
    significant first (8 chars x 5 bits), so guids made later sort later
    (until the 40-bit counter wraps, every ~34.8 years). The random part is
    80 bits from ``os.urandom`` (what ``secrets`` reads; importing it
    imports ``hmac`` and OpenSSL's ``_hashlib``: ~4 ms a run).
    """
    if now_ms is None:
        now_ms = _time.time_ns() // 1_000_000
    stamp = now_ms & ((1 << (5 * _TIME_CHARS)) - 1)
    head = "".join(GUID_ALPHABET[(stamp >> (5 * i)) & 31] for i in reversed(range(_TIME_CHARS)))
    # 80 random bits, 5 a char: one read of the system's random source, not 16.
    bits = int.from_bytes(os.urandom(_RANDOM_CHARS * 5 // 8), "big")
    tail = "".join(GUID_ALPHABET[(bits >> (5 * i)) & 31] for i in range(_RANDOM_CHARS))
    return f"{head}-{tail[:8]}-{tail[8:]}"


def start_record(formula_id: str, hostname: str = "", now: float | None = None) -> RunRecord:
    """A fresh record for a run about to start: new guid, current time, exit code -1."""
    now_s = _time.time() if now is None else now
    return RunRecord(
        guid=new_guid(int(now_s * 1000)),
        time=int(now_s),
        formula_id=formula_id,
        exit_code=-1,
        results={},
        hostname=hostname,
    )


def encode_pretty(record: RunRecord) -> bytes:
    """JSON indented by four spaces, in the fixed key order, with a trailing newline."""
    builtins = msgspec.to_builtins(record)  # keeps declaration order, drops unset optionals
    results = builtins.get("results")
    if isinstance(results, dict):
        builtins["results"] = dict(sorted(results.items()))
    # Byte for byte json.dumps(indent=4, ensure_ascii=False), without importing json.
    return msgspec.json.format(msgspec.json.encode(builtins), indent=4) + b"\n"


def decode(data: bytes) -> RunRecord:
    """Parse a run record (ours or the original's); unknown keys are ignored."""
    return msgspec.json.decode(data, type=RunRecord)
