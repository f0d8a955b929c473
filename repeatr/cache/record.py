"""What we know about each shelf, kept beside it in ``meta/`` (see layout).

The record holds the shelf's **strict ID**: the ``tar-strict`` tree hash of
the fileset exactly as unpacked, nanosecond mtimes and xattrs included. The
unpack computes it while writing (``UnpackResult.strict_id``), so recording
it costs no second read of the tree; ``verify`` re-hashes the shelf the
same way (:func:`~repeatr.fileset.pack.hash_dir_exact`). The ware's own ID
cannot serve to check a shelf: a ``tar`` ID skips symlinks (the compat
quirk), so a shelf whose symlink was retargeted still matches it. The
strict hash covers every entry.

Records written before the strict ID was exact hold ``pack_dir``'s strict
hash instead (whole-second mtimes, no xattrs; ``strict_exact`` false):
they are checked that way, so they stay valid.

Records are written atomically (temp file + rename) and only under the
per-ware lock. "Last used" is the mtime of a separate empty file, touched
on every use, so using a shelf never rewrites the record.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import msgspec

from repeatr.errors import CacheError, DiskFull, is_no_space
from repeatr.model.wareid import TAR_STRICT, WareID


class ShelfRecord(msgspec.Struct, frozen=True, kw_only=True):
    ware: str
    #: ``tar-strict:<hash>`` of the shelf right after unpacking: what
    #: ``verify`` compares against. ``UnpackResult.strict_id`` (or, for an
    #: adopted shelf, ``hash_dir_exact`` of it then).
    strict: str
    #: True: ``strict`` is exact (ns mtimes, xattrs). False only in records
    #: from older versions, whose ``strict`` is ``pack_dir``'s hash.
    strict_exact: bool = False
    #: Content bytes of regular files.
    size: int
    entries: int
    #: Unix time the shelf was made (or adopted).
    created: float
    #: True when the shelf was found on disk without a valid record (made by
    #: rio, or its record lost), matched its ware ID, and was measured then.
    adopted: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ShelfRecord)


def read(path: Path, ware: WareID) -> ShelfRecord | None:
    """``ware``'s record at ``path``; None if missing, unreadable or another ware's.

    None means the shelf has no valid record: it is not trusted as it is
    (see :func:`adopt`).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        found = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return found if found.ware == str(ware) else None


def write(path: Path, record: ShelfRecord) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_encoder.encode(record) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_no_space(exc):
            raise DiskFull.of(exc, path, "write the cache record") from exc
        raise CacheError(f"cannot write the cache record {path}: {exc.strerror}") from exc


def measure(shelf: Path) -> tuple[int, int]:
    """(content bytes, entry count) of a tree on disk, counting the root."""
    root = os.lstat(shelf)
    if stat.S_ISREG(root.st_mode):  # a single-file ware
        return root.st_size, 1
    size, entries = 0, 1
    for dirpath, dirnames, filenames in os.walk(shelf):
        for name in dirnames + filenames:
            entries += 1
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return size, entries


def strict_id(shelf: Path, *, exact: bool = True) -> WareID:
    """The strict tree hash of a shelf as it is on disk now (reads every file).

    ``exact=False`` hashes as records from older versions did (``pack_dir``:
    whole-second mtimes, no xattrs).
    """
    from repeatr.fileset.pack import hash_dir_exact, pack_dir  # only verify needs it
    from repeatr.model.filters import Filters

    if exact:
        return hash_dir_exact(shelf, packtype=TAR_STRICT)
    return pack_dir(shelf, None, filters=Filters(), packtype=TAR_STRICT)


def ware_id_on_disk(shelf: Path, ware: WareID) -> WareID:
    """The tree hash of the shelf as it is now, in ``ware``'s packtype.

    What a lossless unpack of ``ware`` leaves on disk hashes to ``ware``
    exactly (nanosecond mtimes and xattrs, as the ware's own hash has them;
    directories the archive only implied were made with the inferred
    metadata): ``UnpackResult.filtered_id``, with no filters. A ``tar-strict``
    ware with a symlink whose mode is not 0777 never matches (Linux stores
    0777): such a shelf is unpacked afresh.
    """
    from repeatr.fileset.pack import hash_dir_exact  # only a shelf without a record needs it

    return hash_dir_exact(shelf, packtype=ware.packtype)


def adopt(shelf: Path, ware: WareID) -> ShelfRecord | None:
    """A record for a shelf found without a valid one, or None if it is not ``ware``.

    A shelf without a record (made by rio, or the record lost or damaged)
    is re-hashed against its ware ID first: one whose files were changed,
    added or removed is not ``ware`` and must not be recorded as it is. (The
    ``tar`` hash skips symlinks, the compat quirk; the strict ID recorded
    from here on covers them.)
    """
    if ware_id_on_disk(shelf, ware) != ware:
        return None
    size, entries = measure(shelf)
    return ShelfRecord(
        ware=str(ware),
        strict=str(strict_id(shelf)),
        strict_exact=True,
        size=size,
        entries=entries,
        created=time.time(),
        adopted=True,
    )


def touch(path: Path) -> None:
    """Mark a use: create the file or bump its mtime to now."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.utime(fd)
    finally:
        os.close(fd)


def last_used(used: Path, shelf: Path) -> float:
    """mtime of the use marker; a shelf never used by us counts from its own mtime."""
    for path in (used, shelf):
        try:
            return os.stat(path, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
    return 0.0
