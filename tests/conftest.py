"""Suite-wide guard: the whole test suite leaves the host as it found it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rootfs import STRICT, iproute2_netns_dir

DEFAULT_STATE = Path("/var/lib/repeatr")


def _host_state() -> dict[str, list[str]]:
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    if not STRICT:
        # Other sessions on a shared dev machine mount tmpfs dirs and named netns
        # (`ip netns add` also makes /run/netns a mount point) while we run;
        # CI (strict) tolerates nothing.
        lines = [line for line in lines if not iproute2_netns_dir(line)]
    mounts = [f"{line.split()[4]} {line.split(' - ')[1].split()[0]}" for line in lines]
    if not STRICT:
        mounts = [m for m in mounts if not m.endswith(" tmpfs") and "/run/netns/rpr" not in m]
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = sorted(line.split()[0] for line in netns.stdout.splitlines() if line.strip())
    if not STRICT:
        names = [n for n in names if not n.startswith("rpr")]
    state = {
        "mounts": sorted(mounts),
        "netns": names,
    }
    for sub in ("runs", "tmp"):
        d = DEFAULT_STATE / sub
        state[f"state/{sub}"] = sorted(os.listdir(d)) if d.is_dir() else []
    return state


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Mount table, network namespaces, work-dir root and cache temp area: same after the suite."""
    before = _host_state()
    yield
    after = _host_state()
    for key in before:
        added = sorted(set(after[key]) - set(before[key]))
        assert not added, f"the test suite left {key} behind: {added}"
