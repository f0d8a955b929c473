"""Command-line options that several commands share (``run``, ``module run``)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from repeatr.runner import EXECUTORS

if TYPE_CHECKING:
    from repeatr.runner.run import RunOptions


def positive(value: str) -> int:
    """An argparse type: a whole number of at least 1 (``-j``, ``-n``)."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return n


def add_dask_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--dask`` and ``--warehouse``: run ``what`` on a Dask cluster (docs/distributed.md)."""
    p.add_argument(
        "--dask", metavar="tcp://HOST:PORT", default=os.environ.get("REPEATR_DASK") or None,
        help=f"run {what} on this Dask scheduler's workers (env REPEATR_DASK; needs"
        " --warehouse; see docs/distributed.md)",
    )
    p.add_argument(
        "--warehouse", metavar="URL",
        help="with --dask: the warehouse every worker fetches inputs from and saves"
        " outputs to (ca+http(s)://, or ca+file:// on storage every worker mounts)",
    )


def add_run_options(p: argparse.ArgumentParser, what: str) -> None:
    """How ``what`` run: ``--executor``, ``--no-memo``, ``--bridge``, ``--subnet``."""
    p.add_argument(
        "--executor", "-e", choices=EXECUTORS, default="auto",
        help=f"what runs {what} (default: the best this host offers)",
    )
    p.add_argument(
        "--no-memo", action="store_true", help=f"run {what} even if a record is stored"
    )
    p.add_argument(
        "--bridge", metavar="NAME", default=os.environ.get("REPEATR_BRIDGE"),
        help='host bridge for "network": "bridge" (env REPEATR_BRIDGE, default repeatr0)',
    )
    p.add_argument(
        "--subnet", metavar="CIDR", default=os.environ.get("REPEATR_SUBNET"),
        help="its IPv4 subnet (env REPEATR_SUBNET, default 10.213.0.0/16)",
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """The ``RunOptions`` of parsed arguments; what a command does not take keeps its default."""
    from repeatr.cli.main import cache_root
    from repeatr.runner.run import RunOptions

    return RunOptions.of_command(
        cache_root(args),
        executor=args.executor,
        no_memo=getattr(args, "no_memo", False),
        bridge=getattr(args, "bridge", None),
        subnet=getattr(args, "subnet", None),
        ware_disk=getattr(args, "ware_disk_limit", None),
        output_dir=getattr(args, "output_dir", None),
    )
