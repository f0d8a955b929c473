"""What every reader of an archive refuses, the same way: one definition for scan and unpack.

``repeatr scan`` must not give an ID to an archive that ``unpack`` would
refuse (an ID nothing can use), and must refuse it with the same category
(WARE_CORRUPT) and naming the same member. So the rules that do not depend on
the disk are checked here, per member, before anything is done with it:

- the :class:`~repeatr.fileset.limits.Limits` (entry count, name length,
  depth, total size: :class:`~repeatr.fileset.extract.Budget`);
- hardlinks: refused (the original Repeatr refuses them too);
- a name seen before as another type (``a`` a file, then ``a`` a directory,
  or an implied directory later given as a file);
- a member under something that is not a directory (``a`` a file or a
  symlink, then ``a/b``): extracting it would write through the symlink.

The :class:`~repeatr.fileset.extract.SafeWriter` checks the disk again as
it writes (defence in depth); pack enforces the same limits on what it
writes (:mod:`repeatr.fileset.pack`), so whatever repeatr packs it can read
back.

Memory: one dict entry per member name, as the tree hasher keeps anyway.
"""

from __future__ import annotations

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import TYPE_WORDS, Budget
from repeatr.fileset.limits import Limits


def _corrupt(name: str, why: str) -> FilesetError:
    return FilesetError(f"archive member {name!r}: {why}", category=Category.WARE_CORRUPT)


class Admission:
    """Admits the members of one archive in order; raises naming the first bad one."""

    __slots__ = ("_types", "budget")

    def __init__(self, limits: Limits) -> None:
        self.budget = Budget(limits)
        #: Every name seen (implied parents too, as directories) -> its type.
        #: The root (``.``) is implied a directory by the first member below
        #: it; it may be a file only as the sole member (a single-file ware).
        self._types: dict[str, EntryType] = {}

    def admit(self, entry: Entry) -> None:
        self.budget.admit(entry)
        name = entry.name
        kind = entry.type
        if kind is EntryType.HARDLINK:
            raise _corrupt(
                name,
                f"is a hardlink to {entry.linkname!r}: hardlinks are not supported"
                " (the original Repeatr rejects them too)",
            )
        types = self._types
        if name != ".":
            root = types.setdefault(".", EntryType.DIR)
            if root is not EntryType.DIR:
                raise _corrupt(name, f"follows a root that is a {TYPE_WORDS[root]}")
        elif kind is not EntryType.DIR and types:
            raise _corrupt(name, f"the root is a {TYPE_WORDS[kind]}, after other members")
        before = types.get(name)
        if before is not None and before is not kind:
            raise _corrupt(
                name,
                f"duplicate entry changes type from {TYPE_WORDS[before]} to {TYPE_WORDS[kind]}",
            )
        # Parents: each must be a directory; the first one known ends the walk
        # (its own parents were checked when it was).
        parent = name.rpartition("/")[0] if name != "." else ""
        while parent:
            seen = types.get(parent)
            if seen is EntryType.DIR:
                break
            if seen is not None:
                raise _corrupt(
                    name, f"its parent {parent!r} is a {TYPE_WORDS[seen]}, not a directory"
                )
            types[parent] = EntryType.DIR  # implied
            parent = parent.rpartition("/")[0]
        types[name] = kind
