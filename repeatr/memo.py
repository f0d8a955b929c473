"""Run memoization: a formula run before, the same way, returns its stored record.

The key is the formula ID plus every setting that changes what runs (the
executor asked for); the value is the run record's JSON, exactly as it was
printed. Only successful runs (exit code 0) are remembered, so a flaky failure
is retried instead of replayed, and neither are runs with a host directory
(``mount:``) among their inputs (it can change between runs). ``repeatr run
--no-memo`` ignores the store.

An entry also names the files its saved outputs live in, where those are on
this host (``ca+file://`` and ``file://`` warehouses). A hit needs every one
of them: a record whose wares were deleted is not replayed; the formula runs
again and saves them anew. (Outputs saved over HTTP are not checked: that
would cost the hit path a request per output.)

This module is on the hit path, which must stay fast: it imports nothing
beyond the standard library (check with ``python -X importtime -m repeatr run``).
"""

from __future__ import annotations

import os
import stat

from repeatr.hashes import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

#: Bump when the meaning of a stored record changes, to invalidate old entries.
_VERSION = "3"  # 3: runs with host mount inputs are no longer stored
#: An entry: this line, one ``needs <path>`` line per file the outputs live in,
#: an empty line, then the record exactly as printed.
_MAGIC = b"repeatr-memo 3\n"
_NEEDS = b"needs "


def memo_key(formula_id: str, executor: str, extra: tuple[str, ...] = ()) -> str:
    """A stable key for one way of running one formula."""
    material = "\0".join((_VERSION, formula_id, executor, *extra))
    return sha256(material.encode()).hexdigest()


def file_key(formula_path: str, executor: str) -> str | None:
    """A key from the formula file's bytes: a hit needs no parsing at all.

    Only ever filled with the record the formula-ID key gave, so it can
    never say more than the formula ID does. None if the file cannot be read
    (the slow path then reports the error properly), and None unless it is a
    regular file: a pipe (``repeatr run /dev/stdin``, ``<(...)``) can be read
    only once, and the slow path must be the one that reads it.
    """
    try:
        if not stat.S_ISREG(os.stat(formula_path).st_mode):
            return None
        with open(formula_path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return bytes_key(data, executor)


def bytes_key(data: bytes, executor: str) -> str:
    """``file_key`` of a formula file holding ``data`` (a graph's node has no file)."""
    return memo_key(f"file:{sha256(data).hexdigest()}", executor)


def formula_key(formula_id: str, executor: str) -> str:
    """The key of a run by what it runs: the formula ID and the executor asked for."""
    return memo_key(formula_id, executor)


class MemoStore:
    """Records under ``<state root>/memo/<key[:2]>/<key>.json``, written atomically.

    Plain ``os.path`` strings: pathlib alone would cost the hit path ~5 ms.
    """

    def __init__(self, state_root: str | os.PathLike[str]) -> None:
        self.dir = os.path.join(os.fspath(state_root), "memo")

    def _path(self, key: str) -> str:
        return os.path.join(self.dir, key[:2], f"{key}.json")

    def get(self, key: str) -> bytes | None:
        """The stored record, if there is one and every file it needs still exists."""
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        if not data.startswith(_MAGIC):
            return None
        body = data[len(_MAGIC) :]
        while not body.startswith(b"\n"):
            line, nl, body = body.partition(b"\n")
            if not nl or not line.startswith(_NEEDS) or not os.path.exists(line[len(_NEEDS) :]):
                return None
        return body[1:]

    def get_by_file(self, formula_path: str, executor: str) -> tuple[str | None, bytes | None]:
        """The formula file's key (``file_key``) and the record stored under it, if any.

        ``repeatr run``'s fast path (``repeatr.cli.entry``, before anything else
        is imported); the library runner keys the bytes it read once with the
        same :func:`bytes_key` (``repeatr.runner.run.prepare``).
        """
        key = file_key(formula_path, executor)
        return key, (self.get(key) if key is not None else None)

    def put(self, key: str, record_json: bytes, needs: Sequence[str] = ()) -> None:
        """Store ``record_json``; a later hit requires every path in ``needs`` to exist.

        Raises OSError (a full disk: ENOSPC) with nothing written: the caller
        decides whether that matters (a run only warns).
        """
        encoded = [os.fsencode(p) for p in needs]
        if any(b"\n" in p for p in encoded):
            return  # cannot be written down: better no entry than one that cannot check
        data = _MAGIC + b"".join(_NEEDS + p + b"\n" for p in encoded) + b"\n" + record_json
        path = self._path(key)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        # What ``tempfile.mkstemp`` does (a new 0600 file, O_EXCL, unique name),
        # without importing tempfile (~0.5 ms at the end of every run).
        tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            try:  # os.write, not a file object: no buffer, no flush on close (~20 us)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)  # no partial entry, whatever failed
            raise
