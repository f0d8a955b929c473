"""One entry of a fileset, as read from an archive or a directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EntryType(StrEnum):
    """Entry types, valued as the tree hash spells them (compat.md)."""

    FILE = "f"
    DIR = "d"
    SYMLINK = "L"
    HARDLINK = "h"
    FIFO = "p"
    SOCKET = "S"
    BLOCK = "D"
    CHAR = "c"


@dataclass(slots=True)
class Entry:
    """Metadata of one entry.

    ``name`` is the cleaned path relative to the fileset root, without a
    leading ``./`` or trailing ``/``; the root itself is ``"."``.
    ``mode`` holds permission and setid/sticky bits only (``& 0o7777``).
    """

    name: str
    type: EntryType
    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    size: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
