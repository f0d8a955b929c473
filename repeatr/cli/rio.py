"""The ``rio`` console script: the original rio's command line over ``repeatr``'s commands.

Scripts written for the original call ``rio pack tar PATH --target=URL
--filters=...``, ``rio unpack WARE PATH --source=URL --placer=copy``, ``rio
scan tar --source=URL`` and ``rio mirror WARE --target=URL --source=URL``.
This module only parses that syntax and hands the same values to the
handlers of ``repeatr pack/unpack/scan/mirror`` (:mod:`repeatr.cli.ware_cmds`):
one implementation, two spellings.

Output as rio printed it: the ware ID alone on stdout (``--format=dumb``,
the default), or one JSON object ``{"result": {"wareID": "tar:..."}}``
(``--format=json``; on failure ``{"result": {"error": {"category":
"rio-ware-not-found", "message": ...}}}``), which is what the original's
``rioclient`` reads. Logs go to stderr as ``log: lvl=info msg=...``. Exit
codes are rio's (the same table as repeatr's, 1 to 13).

Where we differ from the original (docs/cli.md "rio"): ``unpack`` refuses a
non-empty destination instead of emptying it; ``--placer=mount`` places a
copy, as ``copy`` and ``direct`` do; ``--placer=none`` fills the cache
(``RIO_BASE``, else repeatr's cache) and places nothing; ``scan`` prints the
archive's ID and only checks that ``--filters`` parses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from repeatr.cli.output import Format, Reporter
from repeatr.errors import Cancelled, Category, RepeatrError
from repeatr.model import filters as filt
from repeatr.model.wareid import PACKTYPES

#: rio's error category names (go-timeless-api ``rio/rioErrors.go``), by exit code.
RIO_CATEGORIES = {
    Category.USAGE: "rio-usage-error",
    Category.WAREHOUSE_UNAVAILABLE: "rio-warehouse-unavailable",
    Category.WAREHOUSE_UNWRITABLE: "rio-warehouse-unwritable",
    Category.WARE_NOT_FOUND: "rio-ware-not-found",
    Category.WARE_CORRUPT: "rio-ware-corrupt",
    Category.HASH_MISMATCH: "rio-hash-mismatch",
    Category.CANCELLED: "rio-cancelled",
    Category.CACHE: "rio-local-cache-problem",
    Category.ASSEMBLY_INVALID: "rio-assembly-invalid",
    Category.PACK_INVALID: "rio-pack-invalid",
    Category.INOPERABLE_PATH: "rio-inoperable-path",
    Category.FILTER_REJECTION: "rio-filter-rejection",
}

PLACERS = ("copy", "direct", "mount", "none")


class RioReporter(Reporter):
    """rio's output: the ware ID (dumb) or ``{"result": ...}`` (json) on stdout."""

    def result(self, text: str, **data: Any) -> None:
        if self.format is Format.JSON:
            self._line({"result": {"wareID": text}})
        else:
            self.stdout.write(text + "\n")
            self.stdout.flush()

    def log(self, message: str, *, level: str = "info") -> None:
        if level != "debug" or self.debug_enabled:
            self.line(f"log: lvl={level} msg={message}")

    def progress(
        self, phase: str, done: int, total: int | None = None, *, final: bool = False
    ) -> None:
        """rio printed no progress in either format."""

    def error(self, err: RepeatrError) -> None:
        self.line(err.message if err.hint is None else f"{err.message} ({err.hint})")
        if self.format is Format.JSON:
            other = "rio-" + err.category.label.replace(" ", "-")
            category = RIO_CATEGORIES.get(err.category, other)
            self._line({"result": {"error": {"category": category, "message": err.message}}})

    def _line(self, doc: object) -> None:
        self.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")  # as refmt wrote it
        self.stdout.flush()


class _UsageError(RepeatrError):
    category = Category.USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"error parsing args: {message}")


def build_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="rio",
        formatter_class=raw,
        description="Repeatable I/O: pack, unpack, scan and mirror wares, with the original\n"
        "rio's syntax and output, on the same code as `repeatr pack/unpack/scan/mirror`.",
        epilog="exit codes: rio's (the same as repeatr's): 1 usage, 3 warehouse unavailable,\n"
        "  4 unwritable, 5 ware not found, 6 corrupt, 7 hash mismatch, 8 cancelled, 9 cache,\n"
        "  11 pack invalid, 12 inoperable path, 13 filter rejection.",
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "--format",
        choices=["dumb", "json", "ansi", "text"],
        default=argparse.SUPPRESS,
        help="dumb (default): the ware ID alone; json: {\"result\": {\"wareID\": ...}}",
    )
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    for action in common._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "pack",
        parents=[common],
        formatter_class=raw,
        help="pack a fileset into a ware",
        description="Pack PATH (a directory or one file) and print its ware ID; with --target,\n"
        "save it in that warehouse. Filters are layered on `conservative`.",
    )
    p.add_argument("packtype", metavar="PACKTYPE", help="tar (or tar-strict)")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--target", metavar="URL", help="warehouse to save the ware in")
    p.add_argument("--filters", metavar="FILTERS", default="", help="e.g. uid=keep,mtime=@0")

    p = sub.add_parser(
        "unpack",
        parents=[common],
        formatter_class=raw,
        help="unpack a ware into a path",
        description="Fetch WARE from the first --source that has it and unpack it at PATH\n"
        "(which must not exist or be an empty directory). Filters are layered on\n"
        "`low-priv`. --placer copy, direct and mount all place a copy; none only fills\n"
        "the cache (RIO_BASE, else repeatr's cache) and places nothing.",
    )
    p.add_argument("ware", metavar="WARE")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--placer", choices=PLACERS, default="copy")
    p.add_argument("--source", metavar="URL", action="append", default=[])
    p.add_argument("--filters", metavar="FILTERS", default="")

    p = sub.add_parser(
        "scan",
        parents=[common],
        formatter_class=raw,
        help="the ware ID of an existing archive",
        description="Print the ware ID of the archive at --source (a path, file:// or\n"
        "http(s):// URL) read as PACKTYPE (tar, tar-strict, zip).",
    )
    p.add_argument("packtype", metavar="PACKTYPE")
    p.add_argument("--source", metavar="URL", required=True, help="the archive to scan")
    p.add_argument("--filters", metavar="FILTERS", default="")

    p = sub.add_parser(
        "mirror",
        parents=[common],
        formatter_class=raw,
        help="copy a ware between warehouses",
        description="Copy WARE from the first --source that has it into --target, verifying it.",
    )
    p.add_argument("ware", metavar="WARE")
    p.add_argument("--target", metavar="URL", required=True)
    p.add_argument("--source", metavar="URL", action="append", default=[])
    return parser


def _packtype(name: str, scanning: bool = False) -> str:
    from repeatr.model.wareid import SCAN_PACKTYPES

    known = SCAN_PACKTYPES if scanning else PACKTYPES
    if name not in known:
        raise _UsageError(f"unsupported packtype {name!r} (known: {', '.join(known)})")
    return name


def _dispatch(args: argparse.Namespace, out: RioReporter) -> int:
    """Translate rio's arguments into the ``repeatr`` handler's and call it."""
    from repeatr.cli import ware_cmds

    if args.command == "pack":
        ns = argparse.Namespace(
            path=args.path,
            target=args.target or None,
            filter=args.filters or "conservative",
            packtype=_packtype(args.packtype),
        )
        return ware_cmds.cmd_pack(ns, out)
    if args.command == "unpack":
        if not args.source:
            raise _UsageError("unpack: give at least one --source warehouse")
        ns = argparse.Namespace(
            ware=args.ware, path=args.path, source=args.source, filter=args.filters or "low-priv"
        )
        if args.placer == "none":
            ns.cache = os.environ.get("RIO_BASE")
            return ware_cmds.cmd_fetch(ns, out)
        return ware_cmds.cmd_unpack(ns, out)
    if args.command == "scan":
        filt.parse("unpack", args.filters or "", base=filt.UNPACK_LOWPRIV)  # checked, as rio did
        ns = argparse.Namespace(source=args.source, packtype=_packtype(args.packtype, True))
        return ware_cmds.cmd_scan(ns, out)
    if not args.source:
        raise _UsageError("mirror: give at least one --source warehouse")
    ns = argparse.Namespace(ware=args.ware, target=args.target, source=args.source)
    return ware_cmds.cmd_mirror(ns, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rio command; return its exit code (rio's table, the same as repeatr's)."""
    if argv is None:
        argv = sys.argv[1:]
    # Known before parsing, so that a usage error is reported in the format asked for.
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    json_asked = any(a == "--format=json" or (a, b) == ("--format", "json") for a, b in pairs)
    out = RioReporter(Format.JSON if json_asked else Format.TEXT, debug="--debug" in argv)
    try:
        args = build_parser().parse_args(argv)
        out = RioReporter(Format(getattr(args, "format", "text")), debug=out.debug_enabled)
        return _dispatch(args, out)
    except RepeatrError as err:
        if out.debug_enabled:
            import traceback

            traceback.print_exc(file=sys.stderr)
        out.error(err)
        return err.exit_code
    except KeyboardInterrupt:
        cancelled = Cancelled("cancelled")
        out.error(cancelled)
        return cancelled.exit_code


def entry() -> NoReturn:
    """The ``rio`` console script."""
    from repeatr.cli.entry import install_signal_handlers

    install_signal_handlers()
    sys.exit(main())
