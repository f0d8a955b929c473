"""Limits on what an archive may contain, against archive bombs.

``max_bytes`` bounds the content an archive *declares* (what unpacking must
read and hash); ``max_disk`` bounds what it may make us *write*: the data
bytes that land on disk, zeros being holes (:mod:`repeatr.fileset.sparse`).
The library's default for ``max_disk`` is unlimited; whoever unpacks picks
one that fits the disk it writes to: :func:`disk_limit` turns a setting
(``50%`` of the free space there, or a size) into bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from repeatr.errors import UsageError

#: What a ware may write by default: this share of the free space of the
#: filesystem it is unpacked to (``--ware-disk-limit``, ``REPEATR_WARE_DISK_LIMIT``).
DEFAULT_WARE_DISK = "50%"


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 64 << 30  # total content bytes
    max_entries: int = 2_000_000
    max_name_length: int = 4096  # bytes of a whole path
    max_depth: int = 256  # path components
    max_disk: int = 1 << 62  # bytes of data written to disk (holes are free)
    #: Where ``max_disk`` came from, for the error ("50% of the free space of /x").
    max_disk_source: str = ""

    @classmethod
    def unlimited(cls) -> Limits:
        big = 1 << 62
        return cls(big, big, big, big, big)

    def with_disk(self, setting: str, where: str | os.PathLike[str]) -> Limits:
        """These limits with ``max_disk`` from ``setting`` for a tree written under ``where``."""
        limit, source = disk_limit(setting, where)
        return replace(self, max_disk=limit, max_disk_source=source)


def disk_limit(setting: str, where: str | os.PathLike[str]) -> tuple[int, str]:
    """``(bytes, how it was set)`` for ``setting``: ``N%`` of the free space of
    ``where``'s filesystem now, a size (``20G``), or ``none``.

    UsageError naming the setting when it is neither. A share of a
    filesystem that cannot be measured is no limit (writing there fails anyway).
    """
    from repeatr.model.units import format_size, parse_size

    text = setting.strip()
    if text.lower() in ("none", "unlimited"):
        return 1 << 62, ""
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise UsageError(
                f"--ware-disk-limit: invalid share {setting!r} (expected e.g. 50%, 20G or none)"
            )
        try:
            st = os.statvfs(where)
        except OSError:  # no such dir: the unpack itself fails, naming it
            return 1 << 62, ""
        free = st.f_bavail * st.f_frsize
        limit = int(free * share / 100)
        return limit, f"{text} of the {format_size(free)} free in {os.fspath(where)}"
    return parse_size(text, "--ware-disk-limit"), "--ware-disk-limit"
