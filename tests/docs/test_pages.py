"""Every command shown in docs/ runs, and prints what the page shows.

Each page runs in order in its own scratch dir on a tmpfs, in one bash
process (see mdblocks.py for the block conventions and conftest.py for the
prepared world). A failure names the page, the line, the command, and what
it printed.

Pages whose owners are still changing them are in PENDING: they are not run
by default. Run them anyway with ``REPEATR_DOCS_PAGES=executors.md,make.md``
(or ``all``); take a page out of PENDING once it passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.rootfs import REPO

from .conftest import STATS, DocsWorld
from .mdblocks import (
    CONSOLE,
    RUN_LANGS,
    Bindings,
    Page,
    console_commands,
    looks_like_commands,
    parse_page,
)
from .shell import Shell

DOCS = REPO / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md"))

#: Pages not run yet, with the reason (none at the moment).
PENDING: dict[str, str] = {}

#: Placeholders a page may use for values that depend on this machine, and what
#: they stand for here. The rootfs ware's ID depends on Debian's busybox build;
#: the docs show it abbreviated.
def substitutions(world: DocsWorld) -> dict[str, str]:
    return {"tar:5oTfgeaKb...": world.rootfs_id}


#: Seconds one command may take (a cold run unpacks the rootfs).
COMMAND_TIMEOUT = 120


def _selected(name: str) -> bool:
    wanted = os.environ.get("REPEATR_DOCS_PAGES", "")
    return wanted == "all" or name in wanted.split(",")


def _subst(text: str, table: dict[str, str]) -> str:
    for placeholder, value in table.items():
        text = text.replace(placeholder, value)
    return text


def run_page(page: Page, world: DocsWorld, scratch: Path) -> list[str]:
    """Run every block of ``page``; the failures, each with its line and output."""
    table = substitutions(world)
    state = scratch.parent / f"{scratch.name}.state"
    for sub in ("home", "tmp", "cache"):
        (state / sub).mkdir(parents=True)
    scratch.mkdir()
    world.prepare(scratch, page.setup)
    stats: dict[str, object] = {"commands": 0, "scripts": 0, "files": 0, "not_run": []}
    STATS[page.name] = stats
    failures: list[str] = []
    bindings = Bindings()
    with Shell(scratch, world.env(state)) as shell:
        for block in page.blocks:
            where = f"{page.name}:{block.line}"
            if failures:
                break
            if block.not_run is not None:
                stats["not_run"].append((block.line, block.not_run))  # type: ignore[attr-defined]
                continue
            if block.file is not None:
                target = scratch / block.file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(_subst(block.body, table))
                stats["files"] += 1  # type: ignore[operator]
                continue
            if block.lang in RUN_LANGS:
                code, out = shell.run(_subst(block.body, table), timeout=COMMAND_TIMEOUT)
                stats["scripts"] += 1  # type: ignore[operator]
                if code != 0:
                    failures.append(f"{where}: script exited {code}:\n{block.body}---\n{out}")
                    break  # what follows builds on it
                continue
            if block.lang != CONSOLE:
                continue
            if failures:
                break
            for cmd in console_commands(block):
                code, out = shell.run(_subst(cmd.text, table), timeout=COMMAND_TIMEOUT)
                stats["commands"] += 1  # type: ignore[operator]
                why = (
                    f"exited {code}" if code != 0
                    else bindings.match([_subst(line, table) for line in cmd.expected], out)
                )
                if why is not None:
                    shown = "\n".join(cmd.expected)
                    failures.append(
                        f"{page.name}:{cmd.line}: $ {cmd.text}\n  {why}\n"
                        f"--- the page shows:\n{shown}\n--- it printed:\n{out}"
                    )
                    break
    return failures


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES)
def test_page_runs_as_shown(name: str, docs_world: DocsWorld) -> None:
    if name in PENDING and not _selected(name):
        pytest.skip(f"{name}: pending ({PENDING[name]}); REPEATR_DOCS_PAGES={name} runs it")
    page = parse_page(DOCS / name)
    scratch = docs_world.base / "pages" / name.removesuffix(".md")
    failures = run_page(page, docs_world, scratch)
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("name", PAGES)
def test_no_untested_commands(name: str) -> None:
    """Commands in a block that is neither run nor marked 'not run' would go untested."""
    page = parse_page(DOCS / name)
    hidden = [b.line for b in page.blocks if looks_like_commands(b)]
    assert not hidden, (
        f"{name}: blocks at lines {hidden} show commands but are not run: make them "
        "```console or ```sh, or put <!-- not run: REASON --> before them"
    )
    reasons = [b for b in page.blocks if b.not_run is not None and not b.not_run.strip()]
    assert not reasons, f"{name}: 'not run' markers without a reason at lines {[b.line for b in reasons]}"
    for block in page.blocks:
        if block.lang == CONSOLE and block.not_run is None:
            assert console_commands(block), f"{name}:{block.line}: a console block with no command"
