"""Limits on what an archive may contain, against archive bombs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = 64 << 30  # total content bytes
    max_entries: int = 2_000_000
    max_name_length: int = 4096  # bytes of a whole path
    max_depth: int = 256  # path components

    @classmethod
    def unlimited(cls) -> Limits:
        big = 1 << 62
        return cls(big, big, big, big)
