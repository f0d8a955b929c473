"""Command-line options that several commands share (``run``, ``module run``)."""

from __future__ import annotations

import argparse
import os


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
