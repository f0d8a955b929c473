"""Flattening image layers into one fileset: whiteouts, replacements, hardlinks.

Two phases, so that nothing is ever deleted on disk and extraction stays
the create-only :class:`~repeatr.fileset.extract.SafeWriter`:

1. **Merge in memory.** Each layer is read with the fileset reader (names
   cleaned; absolute names and ``..`` rejected) into a tree of nodes held in
   memory. Regular files' content is spooled to numbered files in a content
   directory; the tree holds only metadata and a reference. Deleting
   (whiteouts, replacement by another type) is dropping nodes.
2. **Write once.** The merged tree is written, parents first, by one
   ``SafeWriter`` into an empty directory, applying the import filters on the
   way (so ``dev=ignore`` never calls ``mknod`` and ``uid=...`` lets a
   non-root user import), then packed by the caller.

Layer semantics (image-spec ``layer.md``):

- A later entry replaces an earlier one at the same path. A directory over
  a directory only changes its metadata (the children merge); any other
  replacement drops the old node and everything under it.
- ``.wh.<name>`` removes ``<name>`` (and what is under it) as the lower
  layers had it. ``.wh..wh..opq`` in a directory removes everything the lower
  layers had in it. Whiteouts apply to *lower* layers only: each layer's
  whiteouts are applied before its entries, whatever their order in the tar.
  Other ``.wh..wh.*`` names (aufs bookkeeping) are skipped. The markers never
  reach the output. A ``docker export`` tar has no layers below it, so there
  its ``.wh.`` names are ordinary files (``whiteouts=False``).
- A member whose parent is missing gets an implied parent directory (0755,
  0:0, 2010-01-01, as when unpacking a ware). A member whose parent is a
  symlink or a file is rejected (WARE_CORRUPT): Docker follows such symlinks
  inside its chroot; we never write through a symlink. Layers made by
  diffing a real filesystem never contain such paths.

**Hardlinks become copies.** The fileset model has no hardlinks (the tree
hash and the original Repeatr know none), so a hardlink member becomes an
independent copy of its target: same content, same metadata as the target
(they were one inode). The target must be a non-directory already in the
merged tree at that point (earlier in the same layer, or a lower layer),
looked up in the tree, never on disk, so it cannot reach outside it. Every
copy counts against the byte limit, so many links to one big file cannot
blow up the disk unchecked.

xattrs are dropped (a ware does not carry them) and sockets are skipped (a
packed ware skips them too).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from repeatr.errors import Category, FilesetError
from repeatr.fileset.compression import BLOCK
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import Budget, SafeWriter, inferred_dir
from repeatr.fileset.filtering import apply as apply_filters
from repeatr.fileset.limits import Limits
from repeatr.fileset.reader import Member
from repeatr.model.filters import Filters

__all__ = ["Flattener"]

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _corrupt(what: str, name: str, why: str) -> FilesetError:
    return FilesetError(f"{what}: member {name!r}: {why}", category=Category.WARE_CORRUPT)


class _Blob:
    """Spooled content of one regular file, shared by its hardlink copies."""

    __slots__ = ("path", "refs")

    def __init__(self, path: str) -> None:
        self.path = path
        self.refs = 1


@dataclass(slots=True, eq=False)
class _Node:
    entry: Entry
    blob: _Blob | None = None
    children: dict[str, _Node] | None = None  # directories only

    @property
    def is_dir(self) -> bool:
        return self.children is not None


@dataclass(slots=True)
class _Staged:
    """One layer read but not yet merged: its whiteouts go first."""

    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    entries: list[tuple[Entry, _Blob | None]] = field(default_factory=list)


class Flattener:
    """Merges layers (``add_layer``) and writes the result (``write``).

    ``content_dir`` is an existing empty directory for spooled file content
    (on the same filesystem as the output, ideally). ``limits`` bound the
    whole import: entries and bytes of every layer plus hardlink copies.
    """

    def __init__(self, content_dir: Path, *, limits: Limits) -> None:
        self._content = os.fspath(content_dir)
        self._budget = Budget(limits)
        self._next_blob = 0
        self.root = _Node(inferred_dir("."), children={})
        self.layers = 0

    # -- phase 1: merge ----------------------------------------------------------

    def add_layer(self, members: Iterable[Member], what: str, *, whiteouts: bool = True) -> None:
        """Read one layer completely, then merge it over what is there.

        Raises ``FilesetError(WARE_CORRUPT)`` naming ``what`` and the member
        for hostile or inconsistent content. Nothing is merged if reading
        fails part-way (the caller discards the whole import anyway).
        """
        staged = _Staged()
        try:
            for member in members:
                self._stage(member, staged, what, whiteouts)
        except BaseException:
            for _entry, blob in staged.entries:
                if blob is not None:
                    self._release(blob)
            raise
        self.layers += 1
        for path in staged.opaque:
            node = self._find(path)
            if node is not None and node.children is not None:
                for child in node.children.values():
                    self._drop(child)
                node.children.clear()
        for path in staged.whiteouts:
            parent_path, _, base = path.rpartition("/")
            parent = self._find(parent_path or ".")
            if parent is not None and parent.children is not None:
                gone = parent.children.pop(base, None)
                if gone is not None:
                    self._drop(gone)
        for entry, blob in staged.entries:
            self._merge(entry, blob, what)

    def _stage(self, member: Member, staged: _Staged, what: str, whiteouts: bool) -> None:
        entry = member.entry
        name = entry.name
        parent, _, base = name.rpartition("/")
        if whiteouts and base.startswith(WHITEOUT):
            if base == OPAQUE:
                staged.opaque.append(parent or ".")
                return
            target = base[len(WHITEOUT) :]
            if target.startswith(WHITEOUT):
                return  # aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content
            if target in ("", ".", ".."):
                raise _corrupt(what, name, "whiteout of an invalid name")
            staged.whiteouts.append(f"{parent}/{target}" if parent else target)
            return
        self._budget.admit(entry)
        blob = None
        if entry.type is EntryType.FILE:
            blob = self._spool(member.views())
        staged.entries.append((entry, blob))

    def _spool(self, views: Iterator[memoryview]) -> _Blob:
        path = os.path.join(self._content, str(self._next_blob))
        self._next_blob += 1
        fd = os.open(path, _O_NEW, 0o600)
        try:
            for view in views:
                written = os.write(fd, view)
                while written < len(view):
                    written += os.write(fd, view[written:])
        finally:
            os.close(fd)
        return _Blob(path)

    def _release(self, blob: _Blob) -> None:
        blob.refs -= 1
        if blob.refs == 0:
            os.unlink(blob.path)

    def _drop(self, node: _Node) -> None:
        """Release the content of ``node`` and everything under it."""
        stack = [node]
        while stack:
            n = stack.pop()
            if n.blob is not None:
                self._release(n.blob)
                n.blob = None
            if n.children:
                stack.extend(n.children.values())

    def _find(self, path: str) -> _Node | None:
        """The node at ``path``, walking only directories; never creates anything."""
        node = self.root
        if path == ".":
            return node
        for part in path.split("/"):
            if node.children is None:
                return None
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node

    def _parent(self, name: str, what: str) -> dict[str, _Node]:
        """The children of ``name``'s parent, making implied directories as needed."""
        node = self.root
        parts = name.split("/")[:-1]
        for i, part in enumerate(parts):
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                rel = "/".join(parts[: i + 1])
                child = _Node(inferred_dir(rel), children={})
                node.children[part] = child
            elif child.children is None:
                rel = "/".join(parts[: i + 1])
                kind = "a symlink" if child.entry.type is EntryType.SYMLINK else "not a directory"
                raise _corrupt(
                    what, name, f"its parent {rel!r} is {kind}: writing through it is not allowed"
                )
            node = child
        assert node.children is not None
        return node.children

    def _merge(self, entry: Entry, blob: _Blob | None, what: str) -> None:
        name = entry.name
        if name == ".":
            if entry.type is not EntryType.DIR:  # pragma: no cover - the reader rejects it
                raise _corrupt(what, name, "the root must be a directory")
            self.root.entry = entry
            return
        if entry.type is EntryType.HARDLINK:
            entry, blob = self._copy_of(entry, what)
        siblings = self._parent(name, what)
        base = name.rpartition("/")[2]
        old = siblings.get(base)
        if entry.type is EntryType.DIR:
            if old is not None and old.children is not None:
                old.entry = entry  # a directory over a directory: children merge
                return
            new = _Node(entry, children={})
        else:
            new = _Node(entry, blob=blob)
        siblings[base] = new
        if old is not None:
            self._drop(old)

    def _copy_of(self, link: Entry, what: str) -> tuple[Entry, _Blob | None]:
        target = self._find(link.linkname)
        if target is None or target.children is not None:
            why = "is not in the tree" if target is None else "is a directory"
            raise _corrupt(
                what,
                link.name,
                f"hardlink to {link.linkname!r}, which {why} (a hardlink may only name"
                " a file already extracted in this image)",
            )
        copy = dataclasses.replace(target.entry, name=link.name)
        blob = target.blob
        if blob is not None:
            blob.refs += 1
            self._budget.add_bytes(link.name, os.stat(blob.path).st_size)
        return copy, blob

    # -- phase 2: write -------------------------------------------------------------

    def walk(self) -> Iterator[tuple[Entry, _Blob | None]]:
        """Every entry of the merged tree, parents first, names bytewise sorted."""
        yield dataclasses.replace(self.root.entry, name="."), None
        stack: list[tuple[str, Iterator[tuple[str, _Node]]]] = []
        assert self.root.children is not None
        stack.append(("", iter(_sorted(self.root.children))))
        while stack:
            prefix, children = stack[-1]
            for base, node in children:
                name = prefix + base
                yield dataclasses.replace(node.entry, name=name), node.blob
                if node.children:
                    stack.append((name + "/", iter(_sorted(node.children))))
                    break
            else:
                stack.pop()

    def top_level(self) -> list[str]:
        assert self.root.children is not None
        return sorted(self.root.children)

    def write(
        self,
        dest: Path,
        filters: Filters,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the merged tree into the empty directory ``dest``; the entries written.

        Raises ``FilesetError``: FILTER_REJECTION for a filter's refusal or
        a device node when not root, INOPERABLE_PATH for owners a non-root
        user cannot give, WARE_CORRUPT for names the writer refuses.
        """
        euid = os.geteuid()
        groups = {os.getegid(), *os.getgroups()}
        count = 0
        done = 0
        with SafeWriter(dest, limits=Limits.unlimited()) as writer:
            for raw, blob in self.walk():
                if raw.type is EntryType.SOCKET:
                    continue
                if raw.xattrs:
                    raw.xattrs = {}
                entry = apply_filters(raw, filters)
                if entry is None:
                    continue
                if euid != 0:
                    _check_unprivileged(entry, euid, groups)
                if blob is not None:
                    writer.write(entry, _read_blob(blob.path))
                    done += entry.size
                    self._release(blob)
                    if progress is not None:
                        progress(done)
                else:
                    writer.write(entry)
                count += 1
            writer.finish()
        return count


def _sorted(children: dict[str, _Node]) -> list[tuple[str, _Node]]:
    return sorted(children.items(), key=lambda kv: os.fsencode(kv[0]))


def _read_blob(path: str) -> Iterator[bytes]:
    fd = os.open(path, _O_READ)
    try:
        while chunk := os.read(fd, BLOCK):
            yield chunk
    finally:
        os.close(fd)


def _check_unprivileged(entry: Entry, euid: int, groups: set[int]) -> None:
    if entry.type is EntryType.CHAR or entry.type is EntryType.BLOCK:
        raise FilesetError(
            f"image entry {entry.name!r} is a device node: creating it needs root",
            category=Category.FILTER_REJECTION,
            hint="import as root, or drop device nodes with --filter dev=ignore",
        )
    if entry.uid != euid or entry.gid not in groups:
        raise FilesetError(
            f"image entry {entry.name!r} is owned by {entry.uid}:{entry.gid}:"
            " keeping its owner needs root",
            category=Category.INOPERABLE_PATH,
            hint=f"import as root, or set owners with --filter uid={euid},gid={os.getegid()}",
        )
