"""Outbound NAT for a bridge network: an explicit host setting, off unless turned on.

Runs on a bridge network reach the bridge and each other. To reach beyond
the host, their source addresses must be masqueraded and the host must
forward IPv4. :func:`enable_nat` does both: one nftables table owned by
repeatr per network, ``ip repeatr_<network>``, holding a single
``postrouting`` NAT chain::

    table ip repeatr_default {
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr 10.213.0.0/16 ip daddr != 10.213.0.0/16 masquerade
        }
    }

and sets ``net.ipv4.ip_forward = 1`` (unless ``forwarding=False``).
:func:`disable_nat` deletes the table; it leaves ``ip_forward`` as it is,
since other things on the host may rely on it. Both are idempotent and
atomic (one ``nft -f`` transaction). Nothing else in the host's ruleset is
touched; a firewall that drops forwarded traffic in its own table still
wins (nftables evaluates every base chain), and must be opened by the
host's administrator.

These call ``nft`` and block; they are host administration (``repeatr
net nat on``), not part of a run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from repeatr.errors import NetworkError
from repeatr.net.config import Network

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def table_name(network: Network) -> str:
    return f"repeatr_{network.name}"


def ruleset(network: Network) -> str:
    """The ``nft -f`` script that (re)creates ``network``'s NAT table."""
    table = table_name(network)
    subnet = network.subnet
    return (
        f"table ip {table}\n"
        f"delete table ip {table}\n"
        f"table ip {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f"    ip saddr {subnet} ip daddr != {subnet} masquerade\n"
        "  }\n"
        "}\n"
    )


def enable_nat(network: Network, *, forwarding: bool = True) -> None:
    """Masquerade traffic leaving ``network``'s subnet; turn on IPv4 forwarding."""
    _nft(ruleset(network), f"enabling NAT for network {network.name!r}")
    if forwarding:
        try:
            IP_FORWARD.write_text("1\n")
        except OSError as e:
            raise NetworkError(f"cannot turn on IPv4 forwarding ({IP_FORWARD}): {e}") from e


def disable_nat(network: Network) -> None:
    """Remove ``network``'s NAT table (no error if there is none)."""
    table = table_name(network)
    _nft(f"table ip {table}\ndelete table ip {table}\n", f"disabling NAT for {network.name!r}")


def nat_enabled(network: Network) -> bool:
    """Does ``network``'s NAT table exist?"""
    result = _run(["nft", "list", "table", "ip", table_name(network)], None, check=False)
    return result.returncode == 0


def _nft(script: str, what: str) -> None:
    _run(["nft", "-f", "-"], script, what=what)


def _run(
    argv: list[str], stdin: str | None, *, what: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise NetworkError(
            f"{what or argv[0]}: `{argv[0]}` not found",
            hint="install nftables (apt install nftables)",
        )
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{what} failed: {result.stderr.strip() or result.returncode}")
    return result
