"""What ``ls``, ``gc`` and ``verify`` report: plain values, no behaviour.

Apart from :mod:`repeatr.cache.info` (what a run holds) so that a run, which
never lists, collects or verifies, does not build these classes
(``repeatr.cache`` and ``repeatr.cache.info`` still export them, on first use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from repeatr.model.wareid import WareID


@dataclass(frozen=True, slots=True)
class ShelfInfo:
    """One shelf as ``Cache.ls`` lists it."""

    ware: WareID
    path: Path
    #: Content bytes of regular files.
    size: int
    entries: int
    #: Unix time of the last use.
    last_used: float
    #: Held by a running user right now (a probe: may change at once).
    in_use: bool
    #: ``tar-strict:...`` as recorded; None for a shelf without a record.
    strict: str | None


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``Cache.gc`` removed and kept."""

    removed: list[ShelfInfo] = field(default_factory=list)
    #: Shelves gc wanted to remove but could not: in use or being unpacked.
    kept_in_use: list[ShelfInfo] = field(default_factory=list)
    #: Total size of the shelves left.
    total: int = 0

    @property
    def freed(self) -> int:
        return sum(info.size for info in self.removed)


@dataclass(frozen=True, slots=True)
class Problem:
    """A shelf that does not match its record (or cannot be checked)."""

    ware: WareID
    path: Path
    reason: str
    expected: str | None = None
    actual: str | None = None

    def __str__(self) -> str:
        text = f"{self.ware}: {self.reason} ({self.path})"
        if self.expected is not None and self.actual is not None:
            text += f": recorded {self.expected}, now {self.actual}"
        return text
