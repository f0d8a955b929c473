"""``import``: a container image (docker export tar or OCI layout) as a ware."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from repeatr.cli.output import Reporter
from repeatr.model import filters as filt
from repeatr.model.wareid import PACKTYPES, TAR

DESCRIPTION = """\
Import a container image as one ware and print its ID. SOURCE is either
  FILE             a `docker export` tar (one root filesystem; any compression;
                   '-' reads it from stdin)
  oci:DIR[:TAG]    an OCI image layout, as `skopeo copy ... oci:DIR:TAG` or
                   umoci write it; TAG may be left out when DIR holds one image
The layers are flattened in order (whiteouts applied; hardlinks become
copies), then packed. With --target, the ware is stored in a warehouse.
"""

EPILOG = """\
filters: as for `repeatr pack` (a preset or fields), layered on the default:
  keep everything the image says (uid, gid, mtime, setid bits, device nodes).
  e.g. --filter flatten    owners 1000:1000, mtimes 2010-01-01
examples:
  docker export CONTAINER | repeatr import - --target ca+file:///srv/wares/
  skopeo copy docker://busybox oci:busybox:latest && repeatr import oci:busybox:latest
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "import",
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="import a container image (docker export tar, OCI layout) as a ware",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("--target", metavar="URL", help="warehouse to store the ware in")
    p.add_argument("--filter", metavar="FILTER", default="keep")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", default="linux/amd64",
                   help="which image of a multi-platform index (default: %(default)s)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where to flatten the image (default: /var/tmp or the system temp dir)")
    p.add_argument("--packtype", choices=PACKTYPES, default=TAR, help="default: %(default)s")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.imports import IMPORT_KEEP, import_source
    from repeatr.warehouse import warehouse_for

    filters = IMPORT_KEEP
    if args.filter != "keep":
        filters = filt.parse("pack", args.filter, base=IMPORT_KEEP)
    # Resolve the warehouse first: a bad URL should fail before minutes of work.
    warehouse = warehouse_for(args.target) if args.target is not None else None

    def progress(phase: str, done: int) -> None:
        out.progress(phase, done)

    source = sys.stdin.buffer if args.source == "-" else args.source
    ware = import_source(
        source,
        filters=filters,
        warehouse=warehouse,
        workdir=Path(args.workdir) if args.workdir else None,
        platform=args.platform,
        packtype=args.packtype,
        log=out.log,
        progress=progress,
    )
    out.result(str(ware), ware=str(ware))
    return 0
