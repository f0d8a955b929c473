"""Owner: pid + start time + boot + host, so a reused pid is not mistaken for the owner."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from repeatr.errors import UsageError
from repeatr.owner import Owner, start_ticks


def test_current_is_alive_and_round_trips() -> None:
    me = Owner.current()
    assert me.pid == os.getpid()
    assert me.is_alive()
    assert Owner.parse(str(me)) == me
    assert f"pid {me.pid}" in me.describe()


def test_start_time_is_field_22_of_proc_stat() -> None:
    # A child started now has a later start time than we do.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ticks = start_ticks(child.pid)
        assert ticks is not None and ticks >= Owner.current().start
        assert Owner.of_pid(child.pid) == Owner(
            child.pid, ticks, Owner.current().boot, Owner.current().host
        )
    finally:
        child.kill()
        child.wait()


def test_a_dead_process_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = Owner.of_pid(child.pid)
    child.wait()
    assert owner is None or not owner.is_alive()
    assert start_ticks(child.pid) is None


def test_a_reused_pid_is_not_the_owner() -> None:
    me = Owner.current()
    earlier = Owner(me.pid, me.start - 1, me.boot, me.host)
    assert not earlier.is_alive()


def test_an_earlier_boot_is_dead_and_another_host_counts_as_alive() -> None:
    me = Owner.current()
    assert not Owner(me.pid, me.start, "0" * 32, me.host).is_alive()
    assert Owner(999999999, 1, "0" * 32, me.host + "-elsewhere").is_alive()


@pytest.mark.parametrize("text", ["", "123", "1-2-3", "a-2-b@h", "1-2@h", "1-2-3-4@h"])
def test_bad_records_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        Owner.parse(text)
    assert Owner.try_parse(text) is None
