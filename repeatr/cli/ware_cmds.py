"""``scan``, ``pack``, ``unpack``, ``mirror``: wares in and out of warehouses."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from repeatr.cli.output import Reporter
from repeatr.errors import Category, UsageError
from repeatr.model import filters as filt
from repeatr.model.wareid import PACKTYPES, SCAN_PACKTYPES, TAR, WareID


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    raw = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "scan",
        parents=[common],
        formatter_class=raw,
        help="print the ware ID of an archive",
        description="Print the ware ID of an archive file or a single-ware URL\n"
        "(file://, http(s)://) without unpacking it. Any compression is read;\n"
        "--packtype zip reads a zip archive.",
    )
    p.add_argument("source", metavar="FILE|URL")
    p.add_argument(
        "--packtype", choices=SCAN_PACKTYPES, default=TAR, help="default: %(default)s"
    )
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser(
        "pack",
        parents=[common],
        formatter_class=raw,
        help="pack a directory into a ware",
        description="Pack PATH into a gzip'd tar ware and print its ID. With --target,\n"
        "store it in a warehouse (it is renamed into place only when complete).\n"
        "A PATH that is one file packs to a single-file ware; one that does not\n"
        "exist packs to '<packtype>:-'.",
        epilog="filters: a preset (flatten, conservative) or fields, e.g.\n"
        "  --filter uid=keep,gid=keep,mtime=@0   fields: uid gid mtime sticky setid dev\n"
        "default: conservative (uid/gid 1000, mtime 2010-01-01, setid and devices rejected)",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--target", metavar="URL", help="warehouse to store the ware in")
    p.add_argument("--filter", metavar="FILTER", default="conservative")
    p.add_argument("--packtype", choices=PACKTYPES, default=TAR, help="default: %(default)s")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser(
        "unpack",
        parents=[common],
        formatter_class=raw,
        help="fetch a ware and unpack it into a directory",
        description="Fetch WAREID from the first --source that has it and unpack it into\n"
        "PATH (which must not exist, or be an empty directory). The hash is\n"
        "verified before anything becomes visible; prints the ID after filters.\n"
        "tar, tar-strict and zip wares come from warehouses; a git:<commit> ware\n"
        "from git repositories (file://, http(s)://, a local path). A ware whose\n"
        "root is one file makes PATH that file.",
        epilog="filters: a preset (lossless, low-priv) or fields, e.g.\n"
        "  --filter uid=mine,gid=mine             fields: uid gid mtime sticky setid dev\n"
        "default: low-priv (files owned by you, setid and devices rejected)",
    )
    p.add_argument("ware", metavar="WAREID")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--source", metavar="URL", action="append", required=True,
                   help="warehouse to fetch from; repeat to try several in order")
    p.add_argument("--filter", metavar="FILTER", default="low-priv")
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser(
        "mirror",
        parents=[common],
        formatter_class=raw,
        help="copy a ware between warehouses, verifying it",
        description="Copy WAREID from the first --source that has it into --target,\n"
        "verifying the hash while copying; nothing is stored if it does not match.",
    )
    p.add_argument("ware", metavar="WAREID")
    p.add_argument("--target", metavar="URL", required=True)
    p.add_argument("--source", metavar="URL", action="append", required=True)
    p.set_defaults(func=cmd_mirror)


def cmd_scan(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.fileset.pack import scan_stream
    from repeatr.warehouse import open_single_ware

    with open_single_ware(args.source) as stream:
        ware = scan_stream(stream, packtype=args.packtype)
    out.result(str(ware), ware=str(ware))
    return 0


def cmd_pack(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.fileset.pack import pack_dir
    from repeatr.warehouse import redact, warehouse_for

    filters = filt.parse("pack", args.filter, base=filt.PACK_CONSERVATIVE)
    path = Path(args.path)

    def progress(done: int) -> None:
        out.progress("pack", done)

    if args.target is None:
        ware = pack_dir(path, None, filters=filters, packtype=args.packtype, progress=progress)
    else:
        warehouse = warehouse_for(args.target)
        with warehouse.start_save() as session:
            ware = pack_dir(
                path, session.file, filters=filters, packtype=args.packtype, progress=progress
            )
            session.commit(ware)
        out.log(f"saved {ware} to {redact(args.target)}")
    out.result(str(ware), ware=str(ware))
    return 0


def cmd_unpack(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.cli.main import ware_disk_limit
    from repeatr.fileset.limits import Limits
    from repeatr.warehouse.fetch import unpack_ware

    ware = WareID.parse(args.ware)
    filters = filt.parse("unpack", args.filter, base=filt.UNPACK_LOWPRIV)
    dest = Path(args.path)
    _make_room(dest)

    def progress(done: int) -> None:
        out.progress("unpack", done)

    limits = Limits().with_disk(ware_disk_limit(args), dest.parent)
    result = unpack_ware(
        ware,
        args.source,
        dest,
        filters=filters,
        limits=limits,
        progress=progress,
        on_source=lambda url: out.debug(f"fetching {ware} from {url}"),
    )
    out.result(
        str(result.filtered_id),
        ware=str(result.ware_id),
        filtered=str(result.filtered_id),
        path=str(dest),
        entries=result.entries,
        bytes=result.bytes,
    )
    return 0


def cmd_fetch(args: argparse.Namespace, out: Reporter) -> int:
    """Fill the cache with WAREID (verified) and place nothing: ``rio unpack --placer=none``."""
    from repeatr.cache import Cache
    from repeatr.cli.entry import state_root

    ware = WareID.parse(args.ware)
    cache = Cache(Path(state_root(getattr(args, "cache", None))))
    with cache.shelf(ware, args.source, progress=lambda n: out.progress("fetch", n)) as held:
        out.debug(f"{ware} is on its shelf {held.path}")
    out.result(str(ware), ware=str(ware))
    return 0


def _make_room(dest: Path) -> None:
    """Unpack needs a fresh destination: an empty dir is removed, anything else refused."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(
            f"{dest}: exists and is not a directory", category=Category.INOPERABLE_PATH
        )
    if dest.is_dir():
        if any(os.scandir(dest)):
            raise UsageError(
                f"{dest}: directory is not empty; unpack into a new or empty directory",
                category=Category.INOPERABLE_PATH,
            )
        dest.rmdir()
    if not dest.parent.is_dir():
        raise UsageError(
            f"{dest.parent}: no such directory", category=Category.INOPERABLE_PATH
        )


def cmd_mirror(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.warehouse import redact
    from repeatr.warehouse.mirror import mirror

    ware = WareID.parse(args.ware)
    copied = mirror(ware, args.source, args.target)
    if copied:
        out.log(f"copied {ware} to {redact(args.target)}")
    else:
        out.log(f"already present: {ware} in {redact(args.target)}")
    out.result(str(ware), ware=str(ware), copied=bool(copied))
    return 0
