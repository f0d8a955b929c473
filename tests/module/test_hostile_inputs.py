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
import os
import subprocess
from pathlib import Path

import pytest

from repeatr.errors import Category, FormulaError, ModuleError
from repeatr.module.catalog import CatalogView
from repeatr.module.layout import Workspace
from repeatr.module.model import load_module_bytes
from repeatr.module.order import check, order_deep
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


# ---------------------------------------------------------------- .timeless symlinks

#: No step: the candidate is written without any job running.
NO_STEPS = {"imports": {"b": f"ingest:literal:{BUSYBASH}"}, "steps": {}, "exports": {"e": "b"}}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "link",
    [
        ".timeless/candidates",
        ".timeless/candidates/default",
        ".timeless/candidates/default/m.org",
        ".timeless/candidates/default/m.org/x",
    ],
)
def test_the_candidate_is_never_written_through_a_symlink(scratch: Scratch, link: str) -> None:
    """A workspace shipping ``.timeless/candidates...`` as a symlink gets no file written outside it."""
    outside = scratch.base / "outside"
    outside.mkdir()
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    (ws / link).parent.mkdir(parents=True, exist_ok=True)
    (ws / link).symlink_to(outside)
    write_module(ws / "m.org/x", NO_STEPS)
    done = scratch.repeatr(ws / "m.org/x", "module", "run")
    assert done.code == Category.USAGE, done.stderr
    assert "symlink" in done.stderr
    assert str(ws / link) in done.stderr
    assert "Traceback" not in done.stderr
    assert _tree(outside) == []


def test_a_release_is_never_written_through_a_symlink(scratch: Scratch) -> None:
    """``catalog release`` with ``.timeless/catalog/<module>`` a symlink writes nothing outside."""
    outside = scratch.base / "outside"
    outside.mkdir()
    ws = scratch.base / "ws"
    (ws / ".timeless" / "catalog" / "m.org").mkdir(parents=True)
    (ws / ".timeless" / "catalog" / "m.org" / "x").symlink_to(outside)
    write_module(ws / "m.org/x", NO_STEPS)
    done = scratch.repeatr(ws / "m.org/x", "module", "run")
    assert done.code == 0, done.stderr
    done = scratch.repeatr(ws / "m.org/x", "catalog", "release", "v1")
    assert done.code == Category.USAGE, done.stderr
    assert "symlink" in done.stderr
    assert "Traceback" not in done.stderr
    assert _tree(outside) == []


def test_the_staging_warehouse_is_never_a_symlink(scratch: Scratch) -> None:
    """``.timeless/warehouse`` pointing elsewhere: a pack ingest stores nothing there."""
    outside = scratch.base / "outside"
    outside.mkdir()
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    (ws / ".timeless" / "warehouse").symlink_to(outside)
    (ws / "m.org/x/src").mkdir(parents=True)
    (ws / "m.org/x/src/file").write_text("data\n")
    write_module(ws / "m.org/x", {
        "imports": {"src": "ingest:pack:tar:./src"}, "steps": {}, "exports": {"e": "src"}})
    done = scratch.repeatr(ws / "m.org/x", "module", "run")
    assert done.code == Category.USAGE, done.stderr
    assert "symlink" in done.stderr
    assert str(ws / ".timeless" / "warehouse") in done.stderr
    assert _tree(outside) == []


def test_a_lineage_naming_another_module_cannot_overwrite_its_lineage(tmp_path: Path) -> None:
    """``catalog/a.org/x/lineage.tl`` saying ``"name": "b.org/y"``: a release of a.org/x leaves b.org/y alone."""
    ws = tmp_path / "ws"
    (ws / ".timeless").mkdir(parents=True)
    write_lineage(ws, "b.org/y", {"v9": {"bin": BUSYBASH}})
    victim = ws / ".timeless" / "catalog" / "b.org" / "y" / "lineage.tl"
    before = victim.read_bytes()
    liar = ws / ".timeless" / "catalog" / "a.org" / "x"
    liar.mkdir(parents=True)
    (liar / "lineage.tl").write_text(json.dumps({"name": "b.org/y", "releases": []}))
    view = CatalogView(Workspace(ws))
    view.save_candidate("a.org/x", {"bin": BUSYBASH})
    with pytest.raises(ModuleError, match=r"a\.org/x/lineage\.tl.*'b\.org/y'") as info:
        view.release("a.org/x", "v1")
    assert info.value.category == Category.USAGE
    assert victim.read_bytes() == before
    with pytest.raises(ModuleError, match=r"'b\.org/y'"):
        view.lineage("a.org/x")


@pytest.mark.parametrize("name", ["v1\x1b[2J", "v\x001", "v1\nv2", "v\u202e1", "v" * 300])
def test_a_release_name_with_control_characters_or_too_long_is_refused(
    tmp_path: Path, name: str
) -> None:
    """A release name is shown by ``catalog show`` and ``module plan``: no terminal escapes, no NUL."""
    ws = tmp_path / "ws"
    (ws / ".timeless").mkdir(parents=True)
    view = CatalogView(Workspace(ws))
    view.save_candidate("a.org/x", {"bin": BUSYBASH})
    with pytest.raises(ModuleError, match="not a release name"):
        view.release("a.org/x", name)
    assert not (ws / ".timeless" / "catalog").exists()


# ---------------------------------------------------------------- git ingest


def _git(*args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
                   check=True, capture_output=True)


def test_a_git_ingest_of_another_users_repository_is_refused_before_anything_runs(
    scratch: Scratch,
) -> None:
    """Git will not serve another user's repository to root (its safe.directory rule, which
    guards against a repository's config running commands): so ``ingest:git`` refuses it
    when the module is loaded, in ``plan`` as in ``run``, rather than pinning it and failing
    at the fetch with git's advice to change a config repeatr never reads."""
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    stage_busybash(ws)
    repo = ws / "m.org/x/repo"
    repo.mkdir(parents=True)
    _git("init", "-q", str(repo))
    (repo / "f").write_text("hi\n")
    _git("-C", str(repo), "add", "f")
    _git("-C", str(repo), "commit", "-qm", "x")
    subprocess.run(["chown", "-R", "65534:65534", str(repo)], check=True)
    write_module(ws / "m.org/x", {
        "imports": {"src": "ingest:git:./repo:HEAD", "base": f"ingest:literal:{BUSYBASH}"},
        "steps": {"cat": {"operation": {
            "inputs": {"/": "base", "/src": "src"}, "action": {"exec": ["/bin/cat", "/src/f"]}}}},
    })
    for command in ("plan", "run"):
        done = scratch.repeatr(ws / "m.org/x", "module", command)
        assert done.code == Category.USAGE, done.stderr
        assert "import 'src'" in done.stderr
        assert "owned by uid 65534" in done.stderr
        assert "Traceback" not in done.stderr
        assert '"state": "running"' not in done.stdout + done.stderr


def test_a_staged_ware_is_never_written_through_a_shelf_symlink(scratch: Scratch) -> None:
    """``.timeless/warehouse/<hash[0:3]>`` a symlink: the packed ware is not placed outside."""
    ws = scratch.base / "ws"
    (ws / ".timeless" / "warehouse").mkdir(parents=True)
    (ws / "m.org/x/src").mkdir(parents=True)
    (ws / "m.org/x/src/file").write_text("data\n")
    write_module(ws / "m.org/x", {
        "imports": {"src": "ingest:pack:tar:./src"}, "steps": {}, "exports": {"e": "src"}})
    plan = scratch.repeatr(ws / "m.org/x", "module", "plan")
    assert plan.code == 0, plan.stderr
    ware = next(w for w in plan.stdout.split() if w.startswith("tar:"))
    digest = ware.partition(":")[2]
    outside = scratch.base / "outside"
    outside.mkdir()
    (ws / ".timeless" / "warehouse" / digest[:3]).symlink_to(outside)
    done = scratch.repeatr(ws / "m.org/x", "module", "run")
    assert done.code == Category.WAREHOUSE_UNWRITABLE, done.stderr
    assert "symlink" in done.stderr
    assert "Traceback" not in done.stderr
    assert _tree(outside) == []


def test_a_symlinked_release_lock_is_our_error(tmp_path: Path) -> None:
    """``.timeless/catalog.lock`` a symlink: never followed (O_NOFOLLOW), and said so as ours."""
    ws = tmp_path / "ws"
    (ws / ".timeless").mkdir(parents=True)
    target = tmp_path / "target"
    target.write_text("keep")
    (ws / ".timeless" / "catalog.lock").symlink_to(target)
    view = CatalogView(Workspace(ws))
    view.save_candidate("a.org/x", {"bin": BUSYBASH})
    with pytest.raises(ModuleError, match=r"catalog\.lock"):
        view.release("a.org/x", "v1")
    assert target.read_text() == "keep"
    assert not (ws / ".timeless" / "catalog").exists()


def test_a_release_publishes_ware_ids_only(tmp_path: Path) -> None:
    """A candidate exporting a ``mount:`` (an ``ingest:literal:mount:`` passed through) is not
    published: a catalog others import from holds ware IDs only."""
    ws = tmp_path / "ws"
    (ws / ".timeless").mkdir(parents=True)
    view = CatalogView(Workspace(ws))
    view.save_candidate("a.org/x", {"bin": BUSYBASH, "host": "mount:ro:/etc"})
    with pytest.raises(ModuleError, match=r"'host'.*not a ware ID"):
        view.release("a.org/x", "v1")
    assert not (ws / ".timeless" / "catalog").exists()


# ---------------------------------------------------------------- shapes (already refused: kept so)


def _nested(depth: int) -> bytes:
    inner = '{"steps": {"s": {"operation": {"action": {"exec": ["/bin/true"]}}}}}'
    return ('{"steps": {"m": {"module": ' * depth + inner + "}}}" * depth).encode()


@pytest.mark.parametrize(
    "data",
    [_nested(1000), _nested(100_000), b"[" * 200_000 + b"]" * 200_000,
     b'{"steps": {"a": ' * 50_000 + b"{}" + b"}}" * 50_000],
    ids=["modules-1000-deep", "modules-100000-deep", "array-bomb", "object-bomb"],
)
def test_a_nesting_bomb_is_a_usage_error_naming_the_file(data: bytes) -> None:
    with pytest.raises(FormulaError, match=r"^m\.tl:1:\d+: nested more than 100 levels deep") as info:
        load_module_bytes(data, "m.tl")
    assert info.value.category == Category.USAGE


@pytest.mark.parametrize(
    ("steps", "at"),
    [
        ({"a": {"operation": {"inputs": {"/": "b", "/m": "m.e"}, "outputs": {"o": "/o"}}},
          "m": {"module": {"imports": {"x": "parent:a.o"}, "steps": {
              "s": {"operation": {"inputs": {"/": "x"}, "outputs": {"o": "/o"}}}},
              "exports": {"e": "s.o"}}}}, "a"),
        ({"m": {"module": {"imports": {"x": "parent:m.e"}, "steps": {
            "s": {"operation": {"inputs": {"/": "x"}, "outputs": {"o": "/o"}}}},
            "exports": {"e": "s.o"}}}}, "m"),
    ],
    ids=["through-a-nested-module", "a-module-reading-its-own-export"],
)
def test_a_cycle_through_parent_refs_is_found_before_anything_runs(
    steps: dict[str, object], at: str
) -> None:
    doc = {"imports": {"b": f"ingest:literal:{BUSYBASH}"}, "steps": steps}
    mod = load_module_bytes(json.dumps(doc).encode(), "m.tl")
    with pytest.raises(ModuleError, match=f"not a dag: loop detected at '{at}'"):
        check(mod, "m.tl")
        order_deep(mod, "m.tl")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("name", ["lineage.tl", "mirrors.tl"])
def test_a_catalog_file_that_is_no_regular_file_is_refused(
    scratch: Scratch, kind: str, name: str
) -> None:
    """A FIFO (hangs a read) or a symlink to ``/dev/zero`` (an endless one, as root) in a
    checkout's catalog: refused at once, naming the file."""
    ws = scratch.base / "ws"
    (ws / ".timeless").mkdir(parents=True)
    write_lineage(ws, "evil.org/x", {"v1": {"bin": BUSYBASH}})
    path = ws / ".timeless" / "catalog" / "evil.org" / "x" / name
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    write_module(ws / "m.org/x", {"imports": {"b": "catalog:evil.org/x:v1:bin"}, "steps": {}})
    done = scratch.repeatr(ws / "m.org/x", "module", "plan", timeout=30)
    assert done.code == Category.USAGE, done.stderr
    assert str(path) in done.stderr
    assert "not a regular file" in done.stderr
