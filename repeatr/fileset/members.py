"""What unpacking and scanning read: members, each an entry and (for files) its content.

:class:`repeatr.fileset.reader.Member` is a tar member read by libarchive;
:class:`Plain` is one whose content another reader hands over (a zip
member, a git blob). Both have ``entry``, ``blocks()`` and ``views()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from repeatr.fileset.entry import Entry


class ArchiveMember(Protocol):
    entry: Entry

    def blocks(self) -> Iterator[bytes]: ...

    def views(self) -> Iterator[bytes | memoryview]: ...


class Plain:
    """A member whose content is given as an iterable of blocks (consumed once)."""

    __slots__ = ("_content", "entry")

    def __init__(self, entry: Entry, content: Iterable[bytes] = ()) -> None:
        self.entry = entry
        self._content = content

    def blocks(self) -> Iterator[bytes]:
        return iter(self._content)

    def views(self) -> Iterator[bytes | memoryview]:
        return iter(self._content)

    def __repr__(self) -> str:
        return f"Plain({self.entry!r})"
