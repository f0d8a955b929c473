"""``formula id``: the identity of a formula."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from repeatr.cli.output import Reporter

if TYPE_CHECKING:
    from repeatr.model.formula import Formula


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("formula", help="inspect formulas", description="Inspect formula files.")
    fsub = p.add_subparsers(dest="formula_command", metavar="COMMAND", parser_class=type(p))
    fsub.required = True
    q = fsub.add_parser(
        "id",
        parents=[common],
        help="print a formula's ID",
        description="Print the formula ID of FILE: the hash of the formula after the\n"
        "cradle's defaults. The context (fetch/save URLs) is not part of it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("file", metavar="FILE")
    q.set_defaults(func=cmd_id)


def cmd_id(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.model.formula import load_formula_file
    from repeatr.model.formula_id import formula_id

    frm = load_formula_file(args.file).formula
    warn_about(frm, out)
    fid = formula_id(frm)
    out.result(fid, formulaID=fid)
    return 0


def warn_about(frm: Formula, out: Reporter) -> None:
    """Show what the formula has that is accepted but ignored (e.g. unknown filter keys)."""
    from repeatr.model.formula import warnings

    for message in warnings(frm):
        out.log(message, level="warning")
