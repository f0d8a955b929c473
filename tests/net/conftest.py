"""Fixtures for network tests: real namespaces, real veths, a real bridge, on a private subnet.

Tests talk only between namespaces they create and the test bridge's
address, never to any outside address. The test bridges (``rpb<suffix>N``),
the veth prefix (``rpt<suffix>``), the namespace prefix
(``rprtest<suffix>-``; ``tests.netnames``: a suffix per session, so
concurrent sessions never share one) and the state directory (under
tmp_path) never collide with a user's ``repeatr0``, ``rpr*`` veths,
``repeatr-*`` namespaces or ``/run/repeatr``. Every test checks that ``ip -o
link`` and ``ip netns list`` are unchanged after it (other sessions' names
aside).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from repeatr.net.config import NetHost, Network
from tests import netnames

REPO = Path(__file__).resolve().parents[2]

#: Candidate test subnets; the first that overlaps no host address is used.
_CANDIDATES = ["10.254.213.0/24", "10.253.213.0/24", "172.30.213.0/24"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def host_addresses() -> list[IPv4Interface]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [IPv4Interface(line.split()[3]) for line in out.splitlines()]


def free_subnet(extra_taken: list[IPv4Network] | None = None) -> IPv4Network:
    taken = [a.network for a in host_addresses()] + (extra_taken or [])
    for text in _CANDIDATES:
        net = IPv4Network(text)
        if not any(net.overlaps(t) for t in taken):
            return net
    pytest.fail(f"every candidate test subnet overlaps a host address: {_CANDIDATES}")


def link_names() -> set[str]:
    """Links, but other sessions' (``tests.netnames.foreign``)."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}
    return {n for n in names if not netnames.foreign(n)}


def netns_names() -> list[str]:
    """Named network namespaces (names only), but other sessions'."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = (line.split()[0] for line in out.stdout.splitlines() if line.strip())
    return sorted(n for n in names if not netnames.foreign(n))


@pytest.fixture
def no_leftovers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves a link or a network namespace behind."""
    links, spaces = link_names(), netns_names()
    yield
    assert link_names() == links, "links left behind"
    assert netns_names() == spaces, "network namespaces left behind"


@pytest.fixture
def net_host(tmp_path: Path, no_leftovers: None) -> NetHost:
    """Test-only state directory and names (see the module doc)."""
    if os.geteuid() != 0:
        pytest.fail("network tests need root (network namespaces, veth, bridge)")
    return NetHost(
        state_dir=tmp_path / "state",
        netns_prefix=netnames.NETNS_PREFIX,
        veth_prefix=netnames.VETH_PREFIX,
        lock_timeout=10.0,
    )


@pytest.fixture
def make_network(net_host: NetHost) -> Iterator[Callable[..., Network]]:
    """Networks on test bridges, each removed (bridge and all) after the test."""
    made: list[Network] = []

    def make(name: str = "t", *, prefixlen: int = 24) -> Network:
        base = free_subnet()
        subnet = IPv4Network(f"{base.network_address}/{prefixlen}")
        net = Network(name=name, subnet=subnet, bridge=netnames.bridge(len(made)))
        made.append(net)
        return net

    yield make
    for net in made:
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)


@pytest.fixture
def network(make_network: Callable[..., Network]) -> Network:
    return make_network()


def host_args(host: NetHost) -> str:
    return json.dumps(
        {
            "state_dir": str(host.state_dir),
            "netns_prefix": host.netns_prefix,
            "veth_prefix": host.veth_prefix,
        }
    )


def net_args(net: Network) -> str:
    return json.dumps({"name": net.name, "subnet": str(net.subnet), "bridge": net.bridge})


def start_worker(*args: str, **kw: object) -> subprocess.Popen[str]:
    """``python -m tests.net.workers ARGS`` from the repository root."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.net.workers", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        **kw,  # type: ignore[call-overload]
    )
