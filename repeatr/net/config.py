"""What a run's network looks like: the policy, the bridge network, and where state lives.

- :class:`NetworkPolicy`: ``none`` (own network namespace, loopback only),
  ``host`` (the host's network), ``bridge`` (own namespace with a veth on a
  host bridge and an address from the IP index).
- :class:`Network`: a named bridge network: its name (the IP index's
  directory), its subnet, and the host bridge carrying it. The gateway is
  the subnet's first host address, held by the bridge.
- :class:`NetHost`: where network state lives on this host and how kernel
  objects are named. Production uses the defaults; tests and benchmarks
  pass their own so they never touch a user's ``repeatr0`` or leases.

Names of kernel objects (all derived from the run ID, so a crashed run's
leftovers can be found again):

- network namespace: ``<netns_dir>/<netns_prefix><run_id>``, by default
  ``/run/netns/repeatr-<run_id>`` (visible to ``ip netns list`` and usable
  with ``ip netns exec``);
- host end of the veth: ``<veth_prefix><8 hex of sha256(run_id)>``, by
  default ``rpr`` + 8 hex (11 characters, under the kernel's 15). Its
  interface alias (``ip link show`` "alias") names the run and its owner.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import msgspec

from repeatr.errors import UsageError
from repeatr.executors.protocol import NetworkPolicy  # one definition, the helper's too
from repeatr.hashes import sha256
from repeatr.net import NETNS_DIR, NETNS_PREFIX, STATE_DIR, VETH_PREFIX

__all__ = ["NetworkPolicy"]  # re-exported

#: Longest interface name the kernel accepts (IFNAMSIZ - 1, /usr/include/linux/if.h).
IFNAME_MAX = 15

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_NETWORK_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}")


def check_run_id(run_id: str) -> str:
    """Run IDs name files and namespaces: letters, digits, ``_.-``, at most 128."""
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(
            f"invalid run ID {run_id!r}: use letters, digits, '_', '.', '-' (at most 128, "
            "not starting with a punctuation mark)"
        )
    return run_id


def run_hash(run_id: str) -> str:
    """8 hex digits identifying a run in names that must stay short (interfaces)."""
    return sha256(run_id.encode()).hexdigest()[:8]


class Network(msgspec.Struct, frozen=True):
    """A bridge network: ``name`` keys the IP index, ``bridge`` carries it on the host.

    A struct, not a dataclass: ``dataclasses`` imports ``inspect``, ~6 ms of every
    run's imports (each run's gc reads this module)."""

    name: str = "default"
    subnet: IPv4Network = msgspec.field(default_factory=lambda: IPv4Network("10.213.0.0/16"))
    bridge: str = "repeatr0"

    def __post_init__(self) -> None:
        if not _NETWORK_NAME.fullmatch(self.name):
            raise UsageError(
                f"invalid network name {self.name!r}: use lowercase letters, digits and '_' "
                "(at most 32)"
            )
        if not _IFNAME.fullmatch(self.bridge):
            raise UsageError(
                f"invalid bridge name {self.bridge!r}: at most {IFNAME_MAX} characters "
                "of letters, digits, '_', '.', '-'"
            )
        if not isinstance(self.subnet, IPv4Network):
            msgspec.structs.force_setattr(self, "subnet", parse_subnet(str(self.subnet)))
        if not 16 <= self.subnet.prefixlen <= 30:
            raise UsageError(
                f"subnet {self.subnet} of network {self.name!r} must be between /16 and /30 "
                "(a gateway plus at least one run address, and an index of sane size)"
            )

    @property
    def gateway(self) -> IPv4Interface:
        """The bridge's address: the subnet's first host address."""
        return IPv4Interface(f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}")

    @property
    def gateway_address(self) -> IPv4Address:
        return self.gateway.ip


def parse_subnet(text: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=True)
    except ValueError as e:
        raise UsageError(f"invalid subnet {text!r}: {e}") from None


class NetHost(msgspec.Struct, frozen=True):
    """Where network state lives and how kernel objects are named (see the module doc)."""

    state_dir: Path = Path(STATE_DIR)
    netns_dir: Path = Path(NETNS_DIR)
    netns_prefix: str = NETNS_PREFIX
    veth_prefix: str = VETH_PREFIX
    #: Seconds to wait for an IP index lock before giving up (naming the holder).
    lock_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]{1,7}", self.veth_prefix):
            raise UsageError(f"invalid veth prefix {self.veth_prefix!r}: 1-7 lowercase letters")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.netns_prefix):
            raise UsageError(f"invalid netns prefix {self.netns_prefix!r}")

    def netns_path(self, run_id: str) -> Path:
        return self.netns_dir / f"{self.netns_prefix}{check_run_id(run_id)}"

    def veth_name(self, run_id: str) -> str:
        return f"{self.veth_prefix}{run_hash(check_run_id(run_id))}"

    def is_our_veth(self, ifname: str) -> bool:
        rest = ifname.removeprefix(self.veth_prefix)
        return rest != ifname and re.fullmatch(r"[0-9a-f]{8}", rest) is not None

    @property
    def records_dir(self) -> Path:
        """One record per prepared run (``runs.d``: a network name cannot contain '.')."""
        return self.state_dir / "runs.d"

    def index_dir(self, network: str) -> Path:
        return self.state_dir / network


DEFAULT_HOST = NetHost()
DEFAULT_NETWORK = Network()
