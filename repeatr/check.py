"""Determinism check: run one formula several times and compare every output.

``repeatr check formula.json -n N`` runs the formula N times (memoization
off: :func:`repeatr.supervisor.run_formula` directly), each run's outputs
saved to a private ``ca+file`` warehouse instead of the context's
``saveUrls`` (a check never publishes anything). Outputs whose ware IDs
match in every run are deterministic. For the others, each run's ware is
unpacked losslessly into a scratch dir and the trees are compared entry by
entry against the first run: which paths differ, and how (missing, type,
content, mode, owner, mtime, symlink target, xattrs).

The scratch area is a work dir (:mod:`repeatr.workdir`) named by its owner,
so a check killed half way is cleaned up by the next ``repeatr run`` or
``repeatr gc`` like any dead run.

Note what an ID can see: outputs are packed with the formula's filters
(``flatten`` by default: owners and mtimes normalised), so a difference the
filters erase is not one; and a ``tar`` ware ID does not cover symlinks
(pack with ``tar-strict`` to have them compared).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio.from_thread
import anyio.to_thread
import msgspec

from repeatr import workdir as workdirs
from repeatr.cache import Cache
from repeatr.executors.base import Executor
from repeatr.model.formula import Context, FormulaFile
from repeatr.model.formula_id import formula_id
from repeatr.model.runrecord import new_guid
from repeatr.model.wareid import WareID
from repeatr.supervisor import RunEvents, run_formula

#: ``repeatr check`` exits with this when the runs' outputs (or exit codes) differ.
#: (0: deterministic; 20: every run's job failed the same way; others: errors.)
EXIT_NOT_DETERMINISTIC = 21


@dataclass(frozen=True)
class Difference:
    """One way an entry of an output differs between the first run and run ``run``."""

    output: str  # the output path in the formula, e.g. /task/out
    path: str  # the entry inside the output ("." for its root)
    aspect: str  # missing | type | content | mode | owner | mtime | symlink target | xattrs
    first: str  # as in run 1
    other: str  # as in run ``run``
    run: int  # 2..N


@dataclass
class CheckReport:
    formula_id: str
    runs: int
    exit_codes: list[int] = field(default_factory=list)
    results: list[dict[str, str]] = field(default_factory=list)  # per run: path -> ware ID
    differing_outputs: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return not self.differing_outputs and len(set(self.exit_codes)) <= 1

    def to_json(self) -> dict[str, object]:
        return {
            "formulaID": self.formula_id,
            "runs": self.runs,
            "deterministic": self.deterministic,
            "exitCodes": self.exit_codes,
            "results": self.results,
            "differingOutputs": self.differing_outputs,
            "differences": [asdict(d) for d in self.differences],
        }


async def check_formula(
    loaded: FormulaFile,
    *,
    executor: Executor,
    cache: Cache,
    runs: int = 2,
    events: RunEvents | None = None,
) -> CheckReport:
    """Run ``loaded`` ``runs`` times and compare the outputs (see the module docstring)."""
    ev = events or RunEvents()
    report = CheckReport(formula_id(loaded.formula), runs)
    with anyio.CancelScope(shield=True):  # owned by the try below from the next line
        scratch = await anyio.to_thread.run_sync(
            workdirs.create, cache.root, "check-" + new_guid()
        )
    try:
        warehouse = scratch / "warehouse"
        warehouse.mkdir()
        url = f"ca+file://{warehouse}/"
        context = loaded.context or Context()
        private = msgspec.structs.replace(
            context, save_urls={path: url for path in loaded.formula.outputs or {}}
        )
        mine = msgspec.structs.replace(loaded, context=private)
        for n in range(1, runs + 1):
            ev.log(f"run {n} of {runs}")
            outcome = await run_formula(mine, executor=executor, cache=cache, events=ev)
            report.exit_codes.append(outcome.record.exit_code)
            report.results.append(dict(outcome.record.results))
        for path in sorted(loaded.formula.outputs or {}):
            wares = [r.get(path, "") for r in report.results]
            if len(set(wares)) <= 1:
                continue
            report.differing_outputs.append(path)
            report.differences.extend(
                await anyio.to_thread.run_sync(_compare_output, path, wares, url, scratch)
            )
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(workdirs.remove, scratch)
    return report


# ---------------------------------------------------------------- comparing trees


@dataclass(frozen=True)
class _Seen:
    type: str
    mode: str
    owner: str
    mtime: str
    content: str  # sha256 of a file's content, else ""
    target: str  # a symlink's target, else ""
    xattrs: str


_TYPES: dict[int, str] = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
}

_ASPECTS: tuple[tuple[str, Callable[[_Seen], str]], ...] = (
    ("type", lambda s: s.type),
    ("content", lambda s: s.content),
    ("symlink target", lambda s: s.target),
    ("mode", lambda s: s.mode),
    ("owner", lambda s: s.owner),
    ("mtime", lambda s: s.mtime),
    ("xattrs", lambda s: s.xattrs),
)


def _entries(root: Path) -> Iterator[str]:
    """``root`` and, for a directory, every path under it (a single-file ware is one file)."""
    if not root.is_dir() or root.is_symlink():
        yield os.fspath(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = [*dirnames, *filenames]
        for name in names if dirpath != os.fspath(root) else [".", *names]:
            yield os.path.normpath(os.path.join(dirpath, name))


def _describe_tree(root: Path) -> dict[str, _Seen]:
    """Every entry of ``root`` (lstat, never following links), by relative path."""
    seen: dict[str, _Seen] = {}
    for full in _entries(root):
        st = os.lstat(full)
        kind = _TYPES.get(stat.S_IFMT(st.st_mode), "unknown")
        content = target = ""
        if kind == "file":
            h = hashlib.sha256()
            with open(full, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            content = f"sha256:{h.hexdigest()[:16]} ({st.st_size} bytes)"
        elif kind == "symlink":
            target = os.readlink(full)
        try:
            xattrs = sorted(os.listxattr(full, follow_symlinks=False))
        except OSError:
            xattrs = []
        rel = os.path.relpath(full, root)
        seen[rel] = _Seen(
            type=kind,
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
            owner=f"{st.st_uid}:{st.st_gid}",
            mtime=_mtime(st.st_mtime_ns),
            content=content,
            target=target,
            xattrs=",".join(xattrs),
        )
    return seen


def _mtime(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    return f"@{seconds}" if not frac else f"@{seconds}.{frac:09d}"


def _unpack(ware: str, url: str, dest: Path) -> dict[str, _Seen]:
    from repeatr.fileset.unpack import unpack_stream
    from repeatr.model.filters import UNPACK_LOSSLESS
    from repeatr.warehouse import open_from_sources

    parsed = WareID.parse(ware)
    if parsed.is_empty:
        return {}
    # In a worker thread: a cancelled check stops the fetch and the unpack.
    cancelled = anyio.from_thread.check_cancelled
    with open_from_sources(parsed, [url], checkpoint=cancelled) as (_url, stream):
        unpack_stream(
            stream, dest, expected=parsed, filters=UNPACK_LOSSLESS, checkpoint=cancelled
        )
    return _describe_tree(dest)


def _compare_output(path: str, wares: list[str], url: str, scratch: Path) -> list[Difference]:
    """How each later run's ``path`` differs from the first run's, entry by entry."""
    trees = []
    for n, ware in enumerate(wares, 1):
        dest = scratch / "unpacked" / str(n) / (path.strip("/").replace("/", "_") or "_")
        dest.parent.mkdir(parents=True, exist_ok=True)
        trees.append(_unpack(ware, url, dest) if ware else {})
    first = trees[0]
    found = []
    for n, tree in enumerate(trees[1:], 2):
        if wares[n - 1] == wares[0]:
            continue
        for rel in sorted(first.keys() | tree.keys()):
            a, b = first.get(rel), tree.get(rel)
            if a is None or b is None:
                found.append(
                    Difference(
                        path, rel, "missing",
                        "present" if a else "absent", "present" if b else "absent", n,
                    )
                )
                continue
            for aspect, get in _ASPECTS:
                if get(a) != get(b):
                    found.append(Difference(path, rel, aspect, get(a), get(b), n))
                    if aspect == "type":
                        break  # the rest follows from the type
        if not any(d.run == n for d in found):
            # Same entries, different IDs: something the comparison cannot see
            # (e.g. sub-second mtimes the packer rounds differently).
            found.append(Difference(path, ".", "ware ID", wares[0], wares[n - 1], n))
    return found
