"""Filters: presets, the object form (formulas) and the string form (command line)."""

from __future__ import annotations

import pytest

from repeatr.errors import Category, UsageError
from repeatr.model import filters
from repeatr.model.filters import Filters


def test_presets_match_compat() -> None:
    assert Filters(uid=1000, gid=1000, mtime=1262304000) == filters.PACK_FLATTEN
    assert (
        Filters(uid=1000, gid=1000, mtime=1262304000, setid="reject", dev="reject")
        == filters.PACK_CONSERVATIVE
    )
    assert Filters() == filters.UNPACK_LOSSLESS
    assert Filters(uid="mine", gid="mine", setid="reject", dev="reject") == filters.UNPACK_LOWPRIV
    assert filters.parse("pack", "conservative") == filters.PACK_CONSERVATIVE
    assert filters.parse("unpack", "low-priv") == filters.UNPACK_LOWPRIV


def test_string_form_layers_on_base() -> None:
    got = filters.parse("pack", "uid=0, mtime=@5", base=filters.PACK_CONSERVATIVE)
    assert got == filters.PACK_CONSERVATIVE.replace(uid=0, mtime=5)
    assert filters.parse("pack", "", base=filters.PACK_FLATTEN) == filters.PACK_FLATTEN


def test_keep_and_follow_spellings() -> None:
    assert filters.parse("pack", "uid=keep,mtime=keep") == Filters()
    assert filters.parse("unpack", "uid=follow,gid=mine,mtime=follow") == Filters(gid="mine")
    assert filters.from_mapping("pack", {"mtime": "2010-01-01T00:00:00Z"}).mtime == 1262304000
    assert filters.from_mapping("pack", {"mtime": "2010-01-01T01:00:00+01:00"}).mtime == 1262304000


@pytest.mark.parametrize(
    ("direction", "text"),
    [
        ("pack", "uid=follow"),
        ("pack", "uid=mine"),
        ("unpack", "uid=keep"),
        ("pack", "mtime=follow"),
        ("unpack", "sticky=keep"),
        ("pack", "setid=zero"),
        ("pack", "owner=1"),
        ("pack", "uid"),
        # Rejected by the original (Go strconv / time.RFC3339), accepted by int()/fromisoformat:
        ("pack", "uid=1_000"),
        ("pack", "uid=\u0661\u0662"),
        ("pack", "mtime=@-5"),
        ("pack", "mtime=@1_0"),
        ("pack", "mtime=20100101T000000Z"),
        ("pack", "mtime=2010-01-01 00:00:00+00:00"),
        ("pack", "mtime=2010-01-01T00:00:00"),
        ("pack", "mtime=1969-12-31T23:59:59Z"),
        ("pack", "uid=1,uid=2"),
    ],
)
def test_invalid_filters_are_usage_errors(direction: filters.Direction, text: str) -> None:
    with pytest.raises(UsageError) as info:
        filters.parse(direction, text)
    assert info.value.category is Category.USAGE


def test_object_form_is_normalised_as_the_original_reserialised_it() -> None:
    # go-timeless-api parses the object into its filter struct (strconv.Atoi,
    # time.RFC3339) and hashes the struct re-serialised.
    got = filters.canonical_mapping(
        "pack",
        {"mtime": "2010-01-01T00:00:00Z", "uid": "01000", "gid": "+7", "dev": "reject"},
    )
    assert got == {"uid": "1000", "gid": "7", "mtime": "@1262304000", "dev": "reject"}
    assert filters.canonical_mapping("pack", {"uid": "keep", "mtime": "keep"}) == {
        "uid": "keep",
        "mtime": "keep",
    }
    assert filters.canonical_mapping("unpack", {"mtime": "follow", "gid": "mine"}) == {
        "gid": "mine",
        "mtime": "follow",
    }
    assert filters.canonical_mapping("pack", {"mtme": "@1", "sticky": "ignore"}) == {
        "sticky": "ignore"
    }


def test_unknown_keys_in_the_object_form_are_ignored_only_when_asked() -> None:
    fields = {"uid": "5", "owner": "x"}
    assert filters.from_mapping("pack", fields, ignore_unknown=True) == Filters(uid=5)
    assert filters.unknown_fields(fields) == ["owner"]
    with pytest.raises(UsageError):
        filters.from_mapping("pack", fields)
    with pytest.raises(UsageError):  # the command-line form never ignores them
        filters.parse("pack", "uid=5,owner=x")
