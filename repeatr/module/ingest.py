"""``ingest:`` imports: data entering a module from outside the catalog (reach gadgets/ingest).

* ``ingest:git:PATH:REF``: the commit REF names in the repository at PATH
  (relative to the module's directory). REF is a full ref (``HEAD``,
  ``refs/heads/main``, ``refs/tags/v1``), symbolic refs followed. The ware is
  ``git:<commit>``, fetched from ``file://<repo>/.git``; nothing is packed,
  and uncommitted changes are not in it (the committed tree is).
* ``ingest:pack:TYPE:PATH``: PATH (relative to the module's directory) packed
  as TYPE with the flatten filters into the staging warehouse.
* ``ingest:literal:WARE``: a ware ID (or a ``mount:`` host path) as written,
  with no sources of its own.

Each returns the ware and where to fetch it from. ``dry`` (``module plan``):
a pack ingest hashes without writing anything.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from repeatr.errors import ModuleError, RepeatrError
from repeatr.module.catalog import WareSourcing
from repeatr.module.layout import Workspace
from repeatr.module.model import IngestRef


@dataclass(frozen=True)
class IngestContext:
    #: The module's directory: relative paths are relative to it.
    module_dir: Path
    #: The staging warehouse URL, by packtype (reach's WareStaging).
    staging: dict[str, str]
    #: The workspace: its staging directory is made when a pack ingest first stores into it.
    workspace: Workspace
    #: Hash only, store nothing (``module plan``).
    dry: bool = False


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "LC_ALL": "C",
    }


def _check_owner(ref: IngestRef, repo: Path) -> None:
    """``ModuleError`` unless ``repo`` (and its ``.git``) belong to the user running repeatr.

    Git reads another user's repository only when told it is safe
    (``safe.directory``): a repository's config can make git run commands
    (``core.fsmonitor``...), and root must not run them for whoever owns
    it. The step's fetch of the ``git:`` ware (``repeatr.warehouse.gitrepo``)
    keeps that rule, so the ingest keeps it too: refused here, when the
    module is loaded, not after other steps ran.
    """
    me = os.geteuid()
    for path in (repo, repo / ".git"):
        try:
            owner = path.stat().st_uid
        except OSError:
            continue  # git says what is missing
        if owner != me:
            raise ModuleError(
                f"{ref}: {path} is owned by uid {owner}, not by the user running repeatr"
                f" (uid {me}); git does not read another user's repository for it",
                hint="run repeatr as the repository's owner, or ingest a copy you own",
            )


def ingest_git(ref: IngestRef, ctx: IngestContext) -> tuple[str, WareSourcing]:
    path_text, colon, git_ref = ref.args.partition(":")
    if not colon or not path_text or not git_ref:
        raise ModuleError(
            f"{ref}: need a path and a git ref separated by a colon (ex: 'ingest:git:.:HEAD')"
        )
    if git_ref != "HEAD" and not git_ref.startswith("refs/"):
        raise ModuleError(
            f"{ref}: {git_ref!r} is not a full ref name (HEAD, refs/heads/NAME, refs/tags/NAME)"
        )
    repo = Path(os.path.normpath(ctx.module_dir / path_text))
    if not (repo / ".git").exists() and not (repo / "HEAD").is_file():
        # As reach's go-git PlainOpen: the repository's root (or a bare repository).
        raise ModuleError(f"{ref}: {repo} is not the root of a git repository")
    _check_owner(ref, repo)
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                os.fspath(repo),
                "rev-parse",
                "--verify",
                "--quiet",
                "--end-of-options",
                f"{git_ref}^{{commit}}",
            ],
            env=_git_env(),
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ModuleError(f"{ref}: git is not installed", hint="apt-get install git") from exc
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        reason = why[-1] if why else f"no ref {git_ref!r}"
        raise ModuleError(f"{ref}: cannot resolve {git_ref!r} in {repo}: {reason}")
    commit = done.stdout.decode().strip()
    gitdir = repo / ".git"
    source = f"file://{gitdir if gitdir.exists() else repo}"
    ware = f"git:{commit}"
    sourcing = WareSourcing()
    sourcing.add_ware(ware, [source])
    return ware, sourcing


def ingest_pack(ref: IngestRef, ctx: IngestContext) -> tuple[str, WareSourcing]:
    from repeatr.fileset.pack import pack_dir
    from repeatr.model.filters import PACK_FLATTEN
    from repeatr.model.wareid import PACKTYPES

    packtype, colon, path_text = ref.args.partition(":")
    if not colon or not path_text:
        raise ModuleError(
            f"{ref}: need a pack type and a path separated by a colon"
            " (ex: 'ingest:pack:tar:./here')"
        )
    if packtype not in PACKTYPES or packtype not in ctx.staging:
        raise ModuleError(f"{ref}: cannot pack {packtype!r} (packtypes: tar)")
    path = Path(os.path.normpath(ctx.module_dir / path_text))
    if not path.exists():
        raise ModuleError(f"{ref}: {path} does not exist")
    target = ctx.staging[packtype]
    try:
        if ctx.dry:
            ware = pack_dir(path, None, filters=PACK_FLATTEN, packtype=packtype)
        else:
            from repeatr.warehouse import warehouse_for

            ctx.workspace.make_staging()
            with warehouse_for(target).start_save() as session:
                ware = pack_dir(path, session.file, filters=PACK_FLATTEN, packtype=packtype)
                session.commit(ware)
    except RepeatrError as exc:
        raise type(exc)(f"{ref}: {exc.message}", category=exc.category, hint=exc.hint) from exc
    sourcing = WareSourcing()
    sourcing.add_ware(str(ware), [target])
    return str(ware), sourcing


def ingest_literal(ref: IngestRef) -> tuple[str, WareSourcing]:
    from repeatr.errors import UsageError
    from repeatr.model.formula import parse_input

    try:
        parse_input(ref.args)
    except UsageError as exc:
        raise ModuleError(f"{ref}: {exc.message}") from exc
    return ref.args, WareSourcing()


def ingest(ref: IngestRef, ctx: IngestContext) -> tuple[str, WareSourcing]:
    """The ware ``ref`` names and where to fetch it; raises ``ModuleError`` naming the ref."""
    if ref.kind == "git":
        return ingest_git(ref, ctx)
    if ref.kind == "pack":
        return ingest_pack(ref, ctx)
    return ingest_literal(ref)
