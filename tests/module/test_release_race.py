"""Releases made at the same time are all kept: the lineage is read, changed and written under a lock."""

from __future__ import annotations

import threading
from pathlib import Path

from repeatr.module.catalog import CatalogView
from repeatr.module.layout import Workspace
from tests.module.workspaces import BUSYBASH, make_workspace


def test_concurrent_releases_are_all_recorded(tmp_path: Path) -> None:
    ws = Workspace(make_workspace(tmp_path / "ws"))
    view = CatalogView(ws)
    view.save_candidate("a.org/m", {"bin": BUSYBASH})
    names = [f"v{n}" for n in range(24)]
    start = threading.Barrier(len(names))
    errors: list[BaseException] = []

    def release(name: str) -> None:
        start.wait()
        try:
            CatalogView(ws).release("a.org/m", name)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=release, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    recorded = view.catalog.load_lineage("a.org/m")
    assert recorded is not None
    assert sorted(r.name for r in recorded.releases or ()) == sorted(names)
