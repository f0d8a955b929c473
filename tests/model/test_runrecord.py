"""Run records: guid format, key order, pretty JSON."""

from __future__ import annotations

import json
import re

from repeatr.model.runrecord import (
    GUID_ALPHABET,
    RunRecord,
    decode,
    encode_pretty,
    new_guid,
    start_record,
)

_GUID = re.compile(r"[0-9a-hk-tv-z]{8}-[0-9a-hk-tv-z]{8}-[0-9a-hk-tv-z]{8}")


def test_alphabet_is_the_originals() -> None:
    assert len(GUID_ALPHABET) == len(set(GUID_ALPHABET)) == 32
    assert not set("ijlu") & set(GUID_ALPHABET)


def test_guid_format_and_time_prefix() -> None:
    guid = new_guid()
    assert _GUID.fullmatch(guid), guid
    assert new_guid(0).startswith("00000000-")
    assert new_guid(31).startswith("0000000z-")
    assert new_guid(32).startswith("00000010-")
    # Later times sort later.
    now = 1_700_000_000_000
    assert new_guid(now)[:8] < new_guid(now + 1)[:8] < new_guid(now + 40_000)[:8]


def test_guids_differ() -> None:
    guids = {new_guid(1_700_000_000_000) for _ in range(100)}
    assert len(guids) == 100


def _record(**extra: object) -> RunRecord:
    return RunRecord(
        guid="0000000a-bcdefghk-mnopqrst",
        time=1_500_000_000,
        formula_id="AteQ",
        exit_code=0,
        results={"/z": "tar:b", "/a": "tar:a"},
        **extra,  # type: ignore[arg-type]
    )


def test_key_order_and_omitted_optionals() -> None:
    text = encode_pretty(_record()).decode()
    assert list(json.loads(text)) == ["guid", "time", "formulaID", "exitCode", "results"]
    assert text.endswith("}\n")
    assert '\n    "guid": ' in text
    assert list(json.loads(text)["results"]) == ["/a", "/z"]


def test_hostname_and_metadata_come_last_when_set() -> None:
    text = encode_pretty(_record(hostname="h", metadata={"k": "v"}))
    assert list(json.loads(text)) == [
        "guid", "time", "formulaID", "exitCode", "results", "hostname", "metadata",
    ]  # fmt: skip


def test_exit_code_minus_one_is_printed() -> None:
    record = start_record("AteQ", hostname="box", now=1_600_000_000.5)
    parsed = json.loads(encode_pretty(record))
    assert parsed["exitCode"] == -1
    assert parsed["time"] == 1_600_000_000
    assert parsed["results"] == {}
    assert _GUID.fullmatch(parsed["guid"])


def test_round_trip() -> None:
    record = _record(hostname="h")
    assert decode(encode_pretty(record)) == record


def test_printed_as_the_original_printed_it() -> None:
    """Byte for byte what go-timeless-api's printers (refmt, Indent "    ") wrote."""
    golden = (
        '{\n'
        '    "guid": "0000000a-bcdefghk-mnopqrst",\n'
        '    "time": 1500000000,\n'
        '    "formulaID": "AteQ",\n'
        '    "exitCode": 0,\n'
        '    "results": {\n'
        '        "/a": "tar:a",\n'
        '        "/z": "tar:b"\n'
        '    },\n'
        '    "hostname": "h"\n'
        '}\n'
    )
    assert encode_pretty(_record(hostname="h")).decode() == golden
    empty = RunRecord(guid="g", time=1, formula_id="F", exit_code=-1, results={})
    assert encode_pretty(empty).decode() == (
        '{\n    "guid": "g",\n    "time": 1,\n    "formulaID": "F",\n'
        '    "exitCode": -1,\n    "results": {}\n}\n'
    )


def test_escapes_as_json_dumps_did() -> None:
    """Encoded by msgspec (a single run imports no json), byte for byte what
    ``json.dumps(indent=4, ensure_ascii=False)`` printed: non-ASCII raw, control
    characters, quotes and backslashes escaped, results sorted."""
    odd = "/tâsk/ü\u2028\x7f\x01\n\t\"\\"
    record = RunRecord(
        guid="0000000a-bcdefghk-mnopqrst", time=1, formula_id="AteQ", exit_code=0,
        results={odd: "tar:abc", "/a": "tar:def"}, metadata={"ké": "v\x00"},
    )
    builtins = json.loads(encode_pretty(record))
    assert list(builtins["results"]) == sorted(builtins["results"])
    expected = json.dumps(builtins, indent=4, ensure_ascii=False) + "\n"
    assert encode_pretty(record) == expected.encode()
