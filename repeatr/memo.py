"""Run memoization: a formula run before, the same way, returns its stored record.

The key is the formula ID plus every setting that changes what runs (the
executor asked for); the value is the run record's JSON, exactly as it was
printed. Only successful runs (exit code 0) are remembered, so a flaky failure
is retried instead of replayed. ``repeatr run --no-memo`` ignores the store.

This module is on the hit path, which must stay fast: it imports nothing
beyond the standard library (check with ``python -X importtime -m repeatr run``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: Bump when the meaning of a stored record changes, to invalidate old entries.
_VERSION = "1"


def memo_key(formula_id: str, executor: str, extra: tuple[str, ...] = ()) -> str:
    """A stable key for one way of running one formula."""
    material = "\0".join((_VERSION, formula_id, executor, *extra))
    return hashlib.sha256(material.encode()).hexdigest()


def file_key(formula_path: str, executor: str) -> str | None:
    """A key from the formula file's bytes: a hit needs no parsing at all.

    Only ever filled with the record the formula-ID key gave, so it can
    never say more than the formula ID does. None if the file cannot be read
    (the slow path then reports the error properly).
    """
    try:
        with open(formula_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None
    return memo_key(f"file:{digest}", executor)


class MemoStore:
    """Records under ``<state root>/memo/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, state_root: Path) -> None:
        self.dir = state_root / "memo"

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, record_json: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(record_json)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
