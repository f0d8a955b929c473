"""What the cache hands out: plain values, no behaviour.

What it reports (``ShelfInfo``, ``GcResult``, ``Problem``) lives in
:mod:`repeatr.cache.report`, imported only when one of them is first used
(a warm run never needs them, and each dataclass costs ~0.7 ms to build).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from repeatr.cache.record import ShelfRecord
from repeatr.model.wareid import WareID

if TYPE_CHECKING:
    from repeatr.cache.report import GcResult, Problem, ShelfInfo

__all__ = ["GcResult", "Problem", "ShelfHandle", "ShelfInfo"]


class ShelfHandle(msgspec.Struct, frozen=True):
    """A shelf held in use for the duration of a ``Cache.shelf`` block.

    ``path`` is the unpacked fileset. It is shared by every run on the host
    and must only ever be mounted read-only (overlay lower dir or ro bind);
    nothing may write into it. ``unpacked`` says whether this call did the
    unpack (exactly one of many concurrent callers does).
    """

    path: Path
    ware: WareID
    unpacked: bool
    record: ShelfRecord


def __getattr__(name: str) -> object:
    """``ShelfInfo``, ``GcResult``, ``Problem``: from :mod:`repeatr.cache.report`, on first use."""
    if name in ("GcResult", "Problem", "ShelfInfo"):
        from repeatr.cache import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
