"""``net ls`` and ``net nat``: the bridge network's leases and its outbound NAT."""

from __future__ import annotations

import argparse
import os
from typing import Any

from repeatr.cli.output import Reporter


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "net",
        help="bridge network: leases, outbound NAT",
        description='The network "bridge" runs attach to (default repeatr0, 10.213.0.0/16).\n'
        "Outbound NAT is off unless you turn it on: bridged jobs reach each\n"
        "other and the host's bridge address, nothing beyond.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    nsub = p.add_subparsers(dest="net_command", metavar="COMMAND", parser_class=type(p))
    nsub.required = True
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--bridge", metavar="NAME", default=os.environ.get("REPEATR_BRIDGE"))
    where.add_argument("--subnet", metavar="CIDR", default=os.environ.get("REPEATR_SUBNET"))
    q = nsub.add_parser("ls", parents=[common, where], help="list live IP leases")
    q.set_defaults(func=cmd_ls)
    q = nsub.add_parser(
        "nat",
        parents=[common, where],
        help="turn outbound NAT for the bridge network on or off",
        description="on: masquerade traffic from the bridge's subnet leaving the host\n"
        "(an nftables table of repeatr's own, and IPv4 forwarding on); off: remove\n"
        "that table; status: say whether it is on.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("state", choices=("on", "off", "status"))
    q.set_defaults(func=cmd_nat)


def _network(args: argparse.Namespace) -> Any:
    from repeatr.runner.run import net_settings

    network, _host = net_settings(args.bridge, args.subnet).resolved()
    return network


def cmd_ls(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.net.config import DEFAULT_HOST
    from repeatr.net.ipindex import IPIndex

    network = _network(args)
    index = IPIndex(DEFAULT_HOST.state_dir, network.name, network.subnet)
    leases = index.leases()
    rows = [f"{lease.address}  {lease.run_id}  {lease.owner}" for lease in leases]
    out.result(
        "\n".join(rows) if rows else f"no leases on {network.bridge} ({network.subnet})",
        leases=[
            {"address": str(x.address), "run": x.run_id, "owner": str(x.owner)} for x in leases
        ],
    )
    return 0


def cmd_nat(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.net.nat import disable_nat, enable_nat, nat_enabled

    network = _network(args)
    if args.state == "on":
        enable_nat(network)
    elif args.state == "off":
        disable_nat(network)
    on = nat_enabled(network)
    out.result(
        f"outbound NAT for {network.bridge} ({network.subnet}): {'on' if on else 'off'}",
        bridge=network.bridge, subnet=str(network.subnet), nat=on,
    )
    return 0
