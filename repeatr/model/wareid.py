"""Ware IDs: ``<packtype>:<hash>``, split on the first colon."""

from __future__ import annotations

import re
from functools import lru_cache

import msgspec

from repeatr.errors import UsageError
from repeatr.model.base58 import b58decode, b58encode

#: The original's packtype. Its hash skips symlinks and other non-file
#: entries (the compat quirk), so two filesets differing only in a symlink
#: share an ID.
TAR = "tar"
#: Our packtype with the same tar format, whose hash covers every entry.
TAR_STRICT = "tar-strict"
#: The original's zip wares: the same tree hash over a zip's members. Read only.
ZIP = "zip"
#: The original's git wares: ``git:<40-hex commit>``, fetched from git
#: repositories, never packed. The hash is the commit's, checked by git.
GIT = "git"
#: What pack writes (and a formula output may name).
PACKTYPES = (TAR, TAR_STRICT)
#: What scan reads.
SCAN_PACKTYPES = (TAR, TAR_STRICT, ZIP)
#: Every packtype a ware ID may have (what unpack and formula inputs take).
ALL_PACKTYPES = (TAR, TAR_STRICT, ZIP, GIT)

#: The hash part printed for "nothing": packing a path that does not exist.
EMPTY_HASH = "-"

_GIT_HASH = re.compile(r"[0-9a-f]{40}")


class WareID(msgspec.Struct, frozen=True):
    """A struct, not a dataclass: ``dataclasses`` imports ``inspect`` (~6 ms of a run's
    imports); equality, hashing, repr and positional construction are the same."""

    packtype: str
    hash: str

    @classmethod
    def parse(cls, text: str) -> WareID:
        """Parse and check; raises ``UsageError`` naming what is wrong.

        Remembered (the last 1024; frozen, so shared): a batch's formulas
        mostly name the same few wares, each checked once, not once a
        formula and again by each step that reads it (the base58 decode).
        """
        if cls is WareID:
            return _parse(text)
        return cls._check(text)

    @classmethod
    def _check(cls, text: str) -> WareID:
        packtype, sep, hash_ = text.partition(":")
        if not sep or not packtype or not hash_:
            raise UsageError(f"invalid ware ID {text!r}: expected '<packtype>:<hash>'")
        if packtype not in ALL_PACKTYPES:
            raise UsageError(
                f"invalid ware ID {text!r}: unknown packtype {packtype!r}"
                f" (known: {', '.join(ALL_PACKTYPES)})"
            )
        if packtype == GIT:
            if not _GIT_HASH.fullmatch(hash_):
                raise UsageError(
                    f"invalid ware ID {text!r}: a git ware names a commit by its full"
                    " 40-hex-digit hash"
                )
        elif hash_ != EMPTY_HASH:
            try:
                digest = b58decode(hash_)
            except ValueError as exc:
                raise UsageError(f"invalid ware ID {text!r}: {exc}") from None
            if len(digest) != 48:
                raise UsageError(
                    f"invalid ware ID {text!r}: hash is {len(digest)} bytes, expected 48 (SHA-384)"
                )
        return cls(packtype, hash_)

    @classmethod
    def from_digest(cls, packtype: str, digest: bytes | None) -> WareID:
        return cls(packtype, EMPTY_HASH if digest is None else b58encode(digest))

    @property
    def is_empty(self) -> bool:
        return self.hash == EMPTY_HASH

    def __str__(self) -> str:
        return f"{self.packtype}:{self.hash}"


@lru_cache(maxsize=1024)
def _parse(text: str) -> WareID:
    return WareID._check(text)
