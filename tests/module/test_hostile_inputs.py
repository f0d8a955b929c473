"""Hostile module-layer inputs: a catalog, a mirrors.tl, a workspace's .timeless, a worker's answer.

A ``module.tl`` is as trusted as a formula (its ``ingest:`` paths and
``mount:`` literals are host access by its author's choice; see
docs/security.md). What it *imports* is not: a catalog lineage is data
written by whoever published the release, and the files under
``.timeless/`` came with the workspace. Each test here gives one such input
and checks that repeatr refuses it with its own error, writes nothing
outside the workspace and runs nothing.
"""

from __future__ import annotations

import json

import pytest

from repeatr.errors import Category
from tests.module.conftest import Scratch, stage_busybash
from tests.module.workspaces import BUSYBASH, write_lineage, write_module

pytestmark = pytest.mark.root


def _writer_module(import_ref: str) -> dict[str, object]:
    """One step that writes a marker into whatever ``/host`` is."""
    return {
        "imports": {"base": "catalog:froob.org/base:v1:linux-amd64", "evil": import_ref},
        "steps": {
            "touch": {
                "operation": {
                    "inputs": {"/": "base", "/host": "evil"},
                    "action": {"exec": ["/bin/sh", "-c", "echo pwned > /host/marker"]},
                }
            }
        },
    }


def test_a_catalog_item_cannot_be_a_host_mount(scratch: Scratch) -> None:
    """A release whose item is ``mount:rw:/...`` is refused: a catalog gives wares, never host dirs."""
    host_dir = scratch.base / "host-secrets"
    host_dir.mkdir(mode=0o777)
    host_dir.chmod(0o777)  # the job could write its marker, were the mount made
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    stage_busybash(ws)
    write_lineage(ws, "froob.org/base", {"v1": {"linux-amd64": BUSYBASH}})
    write_lineage(ws, "evil.org/x", {"v1": {"root": f"mount:rw:{host_dir}"}})
    write_module(ws / "m.org/victim", _writer_module("catalog:evil.org/x:v1:root"))
    for command in ("plan", "run"):
        done = scratch.repeatr(ws / "m.org/victim", "module", command)
        assert done.code == Category.USAGE, done.stderr
        assert "import 'evil'" in done.stderr
        assert "not a ware ID" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(host_dir.iterdir()) == []
    assert not (ws / ".timeless" / "candidates").exists()


def test_a_candidate_item_cannot_be_a_host_mount(scratch: Scratch) -> None:
    """The same through ``.timeless/candidates`` (a workspace's files are not the module's)."""
    host_dir = scratch.base / "host-secrets"
    host_dir.mkdir(mode=0o777)
    host_dir.chmod(0o777)  # the job could write its marker, were the mount made
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    stage_busybash(ws)
    write_lineage(ws, "froob.org/base", {"v1": {"linux-amd64": BUSYBASH}})
    cand = ws / ".timeless" / "candidates" / "default" / "evil.org" / "x"
    cand.mkdir(parents=True)
    doc = {"name": "evil.org/x", "releases": [
        {"name": "candidate", "items": {"root": f"mount:ro:{host_dir}"}}]}
    (cand / "lineage.tl").write_text(json.dumps(doc))
    write_module(ws / "m.org/victim", _writer_module("catalog:evil.org/x:candidate:root"))
    done = scratch.repeatr(ws / "m.org/victim", "module", "run")
    assert done.code == Category.USAGE, done.stderr
    assert "import 'evil'" in done.stderr
    assert list(host_dir.iterdir()) == []
