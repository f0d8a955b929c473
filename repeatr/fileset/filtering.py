"""Applying filters (repeatr.model.filters) to one entry.

Filters normalise metadata so that the same content gives the same ware ID
on any host: owners, mtimes, setid/sticky bits and device nodes. They are
applied per entry, on the way into a tar (pack) or onto disk (unpack); the
tree hash is then taken of the filtered entries.

``apply`` never mutates its argument: the unpack side hashes the entry as it
came from the archive *and* the filtered one, and the tree hasher keeps
references.
"""

from __future__ import annotations

import dataclasses
import os

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.model.filters import Filters

__all__ = ["apply", "is_noop"]

_NOOP = Filters()
_SETID = 0o6000
_STICKY = 0o1000


def is_noop(filters: Filters) -> bool:
    """True when ``filters`` leaves every entry unchanged (all ``keep``)."""
    return filters == _NOOP


def _resolve_id(rule: int | str, current: int, mine: int) -> int:
    if rule == "keep":
        return current
    if rule == "mine":
        return mine
    assert isinstance(rule, int)
    return rule


def apply(entry: Entry, filters: Filters) -> Entry | None:
    """The filtered entry, or None when the filter drops it (``dev=ignore``).

    Raises ``FilesetError(FILTER_REJECTION)`` naming the entry for
    ``setid=reject`` on a setuid/setgid entry and ``dev=reject`` on a device
    node. ``dev`` concerns block and char devices only (not fifos, as in the
    original). ``mtime`` sets whole seconds and zeroes the nanoseconds.
    """
    if filters is _NOOP or filters == _NOOP:
        return entry
    etype = entry.type
    if (etype is EntryType.BLOCK or etype is EntryType.CHAR) and filters.dev != "keep":
        if filters.dev == "ignore":
            return None
        raise FilesetError(
            f"{entry.name!r} is a device node and the filter says dev=reject",
            category=Category.FILTER_REJECTION,
        )
    mode = entry.mode
    if mode & _SETID and filters.setid != "keep":
        if filters.setid == "reject":
            raise FilesetError(
                f"{entry.name!r} has setuid/setgid bits ({mode:04o}) and the filter"
                " says setid=reject",
                category=Category.FILTER_REJECTION,
            )
        mode &= ~_SETID
    if filters.sticky == "ignore":
        mode &= ~_STICKY
    uid = _resolve_id(filters.uid, entry.uid, os.getuid()) if filters.uid != "keep" else entry.uid
    gid = _resolve_id(filters.gid, entry.gid, os.getgid()) if filters.gid != "keep" else entry.gid
    mtime, mtime_ns = entry.mtime, entry.mtime_ns
    if filters.mtime is not None:
        mtime, mtime_ns = filters.mtime, 0
    if (
        mode == entry.mode
        and uid == entry.uid
        and gid == entry.gid
        and mtime == entry.mtime
        and mtime_ns == entry.mtime_ns
    ):
        return entry
    return dataclasses.replace(
        entry, mode=mode, uid=uid, gid=gid, mtime=mtime, mtime_ns=mtime_ns
    )
