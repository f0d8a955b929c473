"""``catalog show``, ``catalog release``: the workspace's catalog, as hitch kept it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from repeatr.cli.output import Reporter

DESCRIPTION = """\
The workspace's catalog (.timeless/catalog/<module>/lineage.tl) lists each
module's releases, newest first; a release names wares by item
(e.g. linux-amd64). Modules import them as catalog:MODULE:RELEASE:ITEM.
`repeatr module run` records a module's exports as its "candidate"
release (.timeless/candidates/default/<module>/lineage.tl), seen on top of
the catalog's releases until `catalog release NAME` records it for good.
"""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "catalog",
        help="show the workspace's catalog; record a module's candidate as a release",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="catalog_command", metavar="COMMAND", parser_class=type(p))
    csub.required = True
    q = csub.add_parser(
        "show",
        parents=[common],
        help="a module's lineage, one release, or one item's ware ID",
        description="REF is MODULE (its lineage, as JSON), MODULE:RELEASE (that release,\n"
        "as JSON) or MODULE:RELEASE:ITEM (the ware ID alone, one line), as hitch\n"
        "showed them. The candidate release, if any, comes first.",
        epilog="examples:\n"
        "  repeatr catalog show froob.org/base\n"
        "  repeatr catalog show froob.org/base:v1:linux-amd64\n"
        "  repeatr catalog show example.org/proj-foo:candidate",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("ref", metavar="REF", help="MODULE[:RELEASE[:ITEM]]")
    q.set_defaults(func=cmd_show)
    q = csub.add_parser(
        "release",
        parents=[common],
        help="record the module's candidate as release NAME",
        description="Record the exports of the module's last `repeatr module run` (its\n"
        "candidate release) as release NAME, first in its catalog lineage\n"
        "(created if the module has none). A name already in the lineage is\n"
        "refused: a release, once made, never changes.",
        epilog="example:\n  repeatr module run && repeatr catalog release v1.0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("name", metavar="NAME", help="the release's name (e.g. v1.0)")
    q.add_argument(
        "--module",
        metavar="PATH",
        default=None,
        help="the module's directory (default: the nearest module.tl above the working directory)",
    )
    q.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a metadata entry for the release (repeatable)",
    )
    q.set_defaults(func=cmd_release)


def cmd_show(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.errors import ModuleError
    from repeatr.module.catalog import CatalogView, lineage_json, release_doc
    from repeatr.module.layout import find_workspace

    parts = args.ref.split(":")
    if len(parts) > 3:
        raise ModuleError(f"{args.ref!r}: a catalog ref is MODULE[:RELEASE[:ITEM]]")
    view = CatalogView(find_workspace(Path.cwd()))
    lineage = view.lineage(parts[0])
    if len(parts) == 1:
        import json

        out.result(lineage_json(lineage), lineage=json.loads(lineage_json(lineage)))
        return 0
    if len(parts) == 2:
        import json

        doc = release_doc(lineage.release(parts[1]))
        out.result(json.dumps(doc, indent="\t", ensure_ascii=False), release=doc)
        return 0
    ware = lineage.item(parts[1], parts[2])
    out.result(ware, ware=ware)
    return 0


def cmd_release(args: argparse.Namespace, out: Reporter) -> int:
    from repeatr.errors import UsageError
    from repeatr.module.catalog import CatalogView
    from repeatr.module.layout import expect_module, find_module, find_workspace

    metadata: dict[str, str] = {}
    for entry in args.meta:
        key, eq, value = entry.partition("=")
        if not eq or not key:
            raise UsageError(f"--meta {entry!r}: expected KEY=VALUE")
        metadata[key] = value
    cwd = Path.cwd()
    ws = find_workspace(cwd)
    where = find_module(ws, cwd) if args.module is None else expect_module(ws, cwd / args.module)
    name = where.name
    rel = CatalogView(ws).release(name, args.name, metadata)
    items = rel.items or {}
    out.log(f"released {name}:{rel.name} ({len(items)} item(s))")
    out.result(f"{name}:{rel.name}", module=name, release=rel.name, items=items)
    return 0
