"""ping as an unprivileged user, the way Docker and Podman allow it (issue 12, point 8).

The job runs as uid 1000 under the default ``routine`` policy: no
CAP_NET_RAW, so ping needs an ICMP datagram ("ping") socket, which the
kernel allows only to groups in the network namespace's
``net.ipv4.ping_group_range`` (by default none). repeatr opens the range
to every group in every network namespace it makes, as Docker and Podman
do. Pinged: only 127.0.0.1 (network ``none``) and the test bridge's own
address (``bridge``), both in namespaces these tests create.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.executors.conftest import usable

from .conftest import Runner
from .test_network import BRIDGE, GATEWAY, SUBNET, bridged, job_out

pytestmark = [pytest.mark.root, pytest.mark.network]

__all__ = ["bridged"]  # the fixture, shared with test_network

EXECUTORS = [pytest.param(n, marks=pytest.mark.runtime(n)) for n in ("ns", "runc", "crun", "gvisor")]
# gVisor's own netstack (network none) answers ping sockets; on the bridge it uses
# the host's sockets (--network=host in the prepared namespace), and that runsc
# (Debian's, 2022-12) offers no ICMP sockets there at all: "Address family not
# supported by protocol", whatever the sysctl says.
BRIDGE_EXECUTORS = [
    *EXECUTORS[:3],
    pytest.param("vm", marks=pytest.mark.runtime("vm")),
    pytest.param(
        "gvisor",
        marks=[
            pytest.mark.runtime("gvisor"),
            pytest.mark.xfail(raises=AssertionError, strict=True, reason="runsc hostinet: no ICMP"),
        ],
    ),
]

# The rootfs's busybox (1.35, Debian 12) ping opens only raw sockets, which need
# CAP_NET_RAW whatever the sysctl says. iputils' ping (the host's, run through
# the dynamic loader from a read-only bind of /usr, so its file capability
# does not apply) tries a ping socket first, as newer busybox does.
_USR = "/hostusr"
_LOADER = Path("/usr/lib64/ld-linux-x86-64.so.2")


def _iputils_ping() -> str:
    if not _LOADER.exists() or not Path("/usr/bin/ping").exists():
        pytest.skip("needs the host's iputils ping (Debian: iputils-ping) on x86-64")
    loader = _USR + _LOADER.resolve().as_posix().removeprefix("/usr")  # merged /usr
    return f"{loader} --library-path {_USR}/lib/x86_64-linux-gnu {_USR}/bin/ping"


def _ping(runner: Runner, executor: str, address: str, network: str, *args: str) -> list[str]:
    usable(executor)
    script = f"id -u; {_iputils_ping()} -c1 -W5 {address} >/dev/null && echo ping ok"
    f = runner.formula(
        "/bin/sh", "-c", script, network=network,
        inputs={_USR: "mount:ro:/usr"},
    )  # fmt: skip
    res = runner.run("run", str(f), "--executor", executor, *args)
    assert res.code == 0, res.stderr
    return job_out(res.stderr)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_unprivileged_ping_on_network_none(runner: Runner, executor: str) -> None:
    assert _ping(runner, executor, "127.0.0.1", "none") == ["1000", "ping ok"]


@pytest.mark.parametrize("executor", BRIDGE_EXECUTORS)
def test_unprivileged_ping_on_the_bridge(bridged: Runner, executor: str) -> None:
    args = ("--bridge", BRIDGE, "--subnet", str(SUBNET))
    assert _ping(bridged, executor, GATEWAY, "bridge", *args) == ["1000", "ping ok"]
