"""Policies map to the original's capability sets, with kernel numbers."""

from __future__ import annotations

import pytest

from repeatr.errors import Category, UsageError
from repeatr.model.policy import (
    CAP_LAST_CAP,
    CAPABILITY_NUMBERS,
    Policy,
    capabilities,
    capability_numbers,
    resolve,
)


def test_routine_is_the_default() -> None:
    assert resolve("") is Policy.ROUTINE
    assert resolve("governor") is Policy.GOVERNOR


def test_unknown_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        resolve("root")
    assert info.value.category is Category.USAGE


def test_sets_match_the_original() -> None:
    assert set(capabilities(Policy.ROUTINE)) == {
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    }
    governor = set(capabilities(Policy.GOVERNOR))
    assert governor - set(capabilities(Policy.ROUTINE)) == {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_SYS_CHROOT",
    }  # fmt: skip
    assert "CAP_SYS_ADMIN" not in governor and "CAP_MKNOD" not in governor
    assert capability_numbers(Policy.SYSAD) == tuple(range(CAP_LAST_CAP + 1))


def test_numbers_follow_the_kernel_header() -> None:
    # Spot checks against <linux/capability.h>; the table must be dense 0..LAST.
    assert CAPABILITY_NUMBERS["CAP_CHOWN"] == 0
    assert CAPABILITY_NUMBERS["CAP_KILL"] == 5
    assert CAPABILITY_NUMBERS["CAP_NET_BIND_SERVICE"] == 10
    assert CAPABILITY_NUMBERS["CAP_SYS_ADMIN"] == 21
    assert CAPABILITY_NUMBERS["CAP_AUDIT_WRITE"] == 29
    assert sorted(CAPABILITY_NUMBERS.values()) == list(range(CAP_LAST_CAP + 1))
    assert capability_numbers(Policy.ROUTINE) == (5, 10, 29)


def test_numbers_are_limited_to_the_host_kernel() -> None:
    assert max(capability_numbers(Policy.SYSAD, last_cap=37)) == 37
