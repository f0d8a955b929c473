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
    """Records under ``<state root>/memo/<key[:2]>/<key>.json``, written atomically.

    Plain ``os.path`` strings: pathlib alone would cost the hit path ~5 ms.
    """

    def __init__(self, state_root: str | os.PathLike[str]) -> None:
        self.dir = os.path.join(os.fspath(state_root), "memo")

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key[:2], f"{key}.json")

    def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def put(self, key: str, record_json: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # What ``tempfile.mkstemp`` does (a new 0600 file, O_EXCL, unique name),
        # without importing tempfile (~0.5 ms at the end of every run).
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(record_json)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
