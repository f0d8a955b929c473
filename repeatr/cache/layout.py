"""Where everything lives in the cache directory (see docs/caching.md).

::

    <root>/                                  0700 (created so; root only)
      cache/                                 = rio's cache base ($RIO_CACHE)
        <packtype>/fileset/<h[0:3]>/<h[3:6]>/<hash>/    a shelf: the unpacked fileset
      meta/                                  our bookkeeping, one set per ware:
        <packtype>/<h[0:3]>/<h[3:6]>/<hash>.lock    per-ware exclusive lock (names its holder)
        <packtype>/<h[0:3]>/<h[3:6]>/<hash>.inuse   shared "in use" lock, held while a shelf is used
        <packtype>/<h[0:3]>/<h[3:6]>/<hash>.json    record: strict ID, size, entries, created
        <packtype>/<h[0:3]>/<h[3:6]>/<hash>.used    empty; its mtime is the last use
      tmp/                                   work in progress, each named by its owner:
        unpack.<packtype>-<hash>.<nonce>.<owner>/   an unpack (dies with its owner)
        gc.<packtype>-<hash>.<nonce>.<owner>/       a shelf being deleted

The shelf path is the original rio's (``cache.ShelfFor``: ``<type>/fileset/
<chunk1>/<chunk2>/<hash>`` under ``$RIO_BASE/cache``), so ``<root>/cache``
can be shared with rio run with ``RIO_BASE=<root>`` (or ``RIO_CACHE=<root>/cache``):
shelves either one unpacks are used by the other. Our bookkeeping is kept
out of that tree so rio never sees it; a shelf rio made has no record until
we first use it (then we make one, see :mod:`repeatr.cache.record`).
``tmp/`` sits on the same filesystem as ``cache/`` so renames between them
are atomic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import msgspec

from repeatr.errors import UsageError
from repeatr.linux.rmtree import remove_tree
from repeatr.model.wareid import ALL_PACKTYPES, GIT, WareID
from repeatr.owner import Owner

_BASE58 = re.compile(r"[1-9A-HJ-NP-Za-km-z]{7,}")
#: A git ware's hash: the commit's, 40 hex digits.
_GIT_HASH = re.compile(r"[0-9a-f]{40}")


def _hash_ok(packtype: str, hash_: str) -> bool:
    """Whether ``hash_`` is a hash of ``packtype`` (so it can name no other path)."""
    if packtype not in ALL_PACKTYPES:
        return False
    return bool((_GIT_HASH if packtype == GIT else _BASE58).fullmatch(hash_))

#: Modes of the directories we create. 0700: only root may enter the cache,
#: so no unprivileged process can reach (let alone write) a shelf.
DIR_MODE = 0o700


class TempName(msgspec.Struct, frozen=True):
    """A parsed temp dir name: ``<kind>.<packtype>-<hash>.<nonce>.<owner>``."""

    kind: str
    ware: WareID
    owner: Owner

    @classmethod
    def parse(cls, name: str) -> TempName | None:
        parts = name.split(".", 3)
        if len(parts) != 4:
            return None
        kind, ware_text, _nonce, owner_text = parts
        # base58 has no "-", so the last dash ends the packtype ("tar-strict-<hash>").
        packtype, sep, hash_ = ware_text.rpartition("-")
        owner = Owner.try_parse(owner_text)
        if not sep or not _hash_ok(packtype, hash_) or owner is None:
            return None
        return cls(kind, WareID(packtype, hash_), owner)


def _segments(ware: WareID) -> tuple[str, str, str, str]:
    """``packtype, hash[0:3], hash[3:6], hash``, checked so no ID can name a path outside."""
    if ware.is_empty:
        raise UsageError(f"the empty ware {ware} has no content to cache")
    if not _hash_ok(ware.packtype, ware.hash):
        raise UsageError(f"invalid ware ID {str(ware)!r}: cannot be cached")
    return ware.packtype, ware.hash[0:3], ware.hash[3:6], ware.hash


class Layout(msgspec.Struct, frozen=True):
    root: Path

    @property
    def shelves(self) -> Path:
        return self.root / "cache"

    @property
    def meta(self) -> Path:
        return self.root / "meta"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def shelf(self, ware: WareID) -> Path:
        packtype, c1, c2, hash_ = _segments(ware)
        return self.shelves / packtype / "fileset" / c1 / c2 / hash_

    def _meta_base(self, ware: WareID) -> Path:
        packtype, c1, c2, hash_ = _segments(ware)
        return self.meta / packtype / c1 / c2 / hash_

    def lock(self, ware: WareID) -> Path:
        return self._meta_base(ware).with_suffix(".lock")

    def inuse(self, ware: WareID) -> Path:
        return self._meta_base(ware).with_suffix(".inuse")

    def record(self, ware: WareID) -> Path:
        return self._meta_base(ware).with_suffix(".json")

    def used(self, ware: WareID) -> Path:
        return self._meta_base(ware).with_suffix(".used")

    def temp_name(self, kind: str, ware: WareID, owner: Owner) -> Path:
        return self.tmp / f"{kind}.{ware.packtype}-{ware.hash}.{os.urandom(4).hex()}.{owner}"

    def temps_of(self, kind: str, ware: WareID) -> list[Path]:
        """Every temp dir of ``kind`` for ``ware``, whoever made it."""
        found = []
        for path in self.list_temps():
            name = TempName.parse(path.name)
            if name is not None and name.kind == kind and name.ware == ware:
                found.append(path)
        return found

    def list_temps(self) -> list[Path]:
        try:
            return sorted(self.tmp.iterdir())
        except FileNotFoundError:
            return []

    def ensure_dirs(self) -> None:
        """Create the root (0700) and our three top dirs (0700). Safe to race."""
        if not self.root.exists():
            _mkdir(self.root, parents=True)
        for path in (self.shelves, self.meta, self.tmp):
            _mkdir(path)

    def ensure_ware_dirs(self, ware: WareID) -> None:
        self.ensure_dirs()
        self.shelf(ware).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.lock(ware).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def iter_shelves(self) -> Iterator[tuple[WareID, Path]]:
        """Every shelf on disk (ours or rio's), in path order."""
        for packtype in ALL_PACKTYPES:
            base = self.shelves / packtype / "fileset"
            for c1 in _sorted_dirs(base):
                for c2 in _sorted_dirs(c1):
                    for shelf in _sorted_dirs(c2, files=True):
                        name = shelf.name
                        if (
                            _hash_ok(packtype, name)
                            and name[0:3] == c1.name
                            and name[3:6] == c2.name
                        ):
                            yield WareID(packtype, name), shelf


def _sorted_dirs(path: Path, *, files: bool = False) -> list[Path]:
    """The directories in ``path`` (and, with ``files``, the regular files: the
    shelves of single-file wares), never symlinks."""
    try:
        return sorted(
            p
            for p in path.iterdir()
            if not p.is_symlink() and (p.is_dir() or (files and p.is_file()))
        )
    except FileNotFoundError:
        return []


def _mkdir(path: Path, *, parents: bool = False) -> None:
    """mkdir with mode 0700 exactly (umask would otherwise loosen nothing but may tighten)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=parents)
    except FileExistsError:
        return
    os.chmod(path, DIR_MODE)


def discard(layout: Layout, path: Path, ware: WareID, owner: Owner) -> bool:
    """Claim ``path`` by renaming it to a ``gc`` temp of ours, then delete it.

    The rename is the claim: when two processes clean the same dead temp
    dir, one rename wins and the other finds nothing (returns False).
    """
    grave = layout.temp_name("gc", ware, owner)
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return False
    remove_tree(grave)  # best effort: a grave left over is clean_stale's once we are gone
    return True
