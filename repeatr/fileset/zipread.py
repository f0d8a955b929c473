"""Reading zip wares (``zip:<hash>``): members with the metadata rio gave them.

A zip ware's ID is the same tree hash as a tar's (compat.md "Tree hash"),
over the metadata the original (rio ``transmat/zip``, through Go's
``archive/zip``) reads from each central-directory entry:

* **name**: the raw bytes (UTF-8 when the entry says so; otherwise Go does
  not decode them, so neither do we: cp437 as Python reads them is turned
  back into the bytes), cleaned like a tar name; a trailing ``/`` makes a
  directory.
* **mode**: from the external attributes, by the creating system: Unix and
  macOS store a Unix mode (``st_mode``: type and permission bits); FAT,
  VFAT and NTFS store DOS attributes (a directory is 0777, a file 0666,
  read-only clears the write bits); any other system gives 0.
* **owner**: the Info-ZIP "ux" extra field (0x7875, uid/gid of 2 or 4
  bytes), else the older "Ux" one (0x7855; rio reads it only when at least
  8 bytes long, else the ware is corrupt), else 1000:1000.
* **mtime**: the MS-DOS time as UTC (2 s precision), replaced by the last of
  the NTFS (0x000a, 100 ns), Unix (0x000d, 0x5855) or extended timestamp
  (0x5455) extra fields present, as Go's reader does.
* **symlinks**: the content is the target. Devices, FIFOs and sockets are
  refused (rio's zip transmat does not support them).

A zip is read from its central directory at the end, so a stream that is
not seekable (HTTP) is spooled to a temp file first.
"""

from __future__ import annotations

import calendar
import shutil
import stat
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

from repeatr.errors import Category, FilesetError
from repeatr.fileset.compression import BLOCK
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.members import Plain
from repeatr.fileset.reader import clean_name

__all__ = ["read_zip"]

_CREATOR_UNIX = 3
_CREATOR_MACOSX = 19
_CREATOR_DOS = (0, 11, 14)  # FAT, NTFS, VFAT
_MSDOS_DIR = 0x10
_MSDOS_READONLY = 0x01
_UTF8_FLAG = 0x800
#: Seconds from 1601-01-01 (the Windows epoch) to 1970-01-01.
_NTFS_EPOCH = 11_644_473_600


def _corrupt(why: str) -> FilesetError:
    return FilesetError(f"corrupt zip: {why}", category=Category.WARE_CORRUPT)


def _raw_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & _UTF8_FLAG:
        return info.filename
    return info.filename.encode("cp437").decode("utf-8", "surrogateescape")


def _mode(info: zipfile.ZipInfo) -> int:
    """An ``st_mode`` (type and permission bits), as Go's ``FileHeader.Mode``."""
    attrs = info.external_attr
    if info.create_system in (_CREATOR_UNIX, _CREATOR_MACOSX):
        mode = attrs >> 16
        if stat.S_IFMT(mode) == 0:
            mode |= stat.S_IFREG
    elif info.create_system in _CREATOR_DOS:
        mode = stat.S_IFDIR | 0o777 if attrs & _MSDOS_DIR else stat.S_IFREG | 0o666
        if attrs & _MSDOS_READONLY:
            mode &= ~0o222
    else:
        mode = stat.S_IFREG
    if info.filename.endswith("/"):
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
    return mode


def _extras(extra: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while len(extra) - at >= 4:
        tag, size = struct.unpack_from("<HH", extra, at)
        at += 4
        if len(extra) - at < size:
            return
        yield tag, extra[at : at + size]
        at += size


def _owner(name: str, extra: bytes) -> tuple[int, int]:
    fields = dict(_extras(extra))
    unix3 = fields.get(0x7875)
    if unix3 is not None:
        if len(unix3) < 7:
            raise _corrupt(f"{name!r}: its 'ux' extra field is too short")
        uid_size = unix3[1]
        if uid_size not in (2, 4):
            raise _corrupt(f"{name!r}: its 'ux' extra field has a uid of {uid_size} bytes")
        uid = int.from_bytes(unix3[2 : 2 + uid_size], "little")
        gid_size = unix3[2 + uid_size]
        if gid_size not in (2, 4) or len(unix3) < 3 + uid_size + gid_size:
            raise _corrupt(f"{name!r}: its 'ux' extra field has a bad gid")
        gid = int.from_bytes(unix3[3 + uid_size : 3 + uid_size + gid_size], "little")
        return uid, gid
    unix2 = fields.get(0x7855)
    if unix2 is not None:
        if len(unix2) < 8:
            raise _corrupt(f"{name!r}: its 'Ux' extra field does not hold an owner")
        return struct.unpack_from("<HH", unix2, 4)
    return 1000, 1000


def _mtime(info: zipfile.ZipInfo) -> tuple[int, int]:
    """(seconds, nanoseconds) since the epoch, as Go's reader sets ``Modified``."""
    year, month, day, hour, minute, second = info.date_time
    # time.Date normalises out-of-range fields (month 0 is December before).
    year += (month - 1) // 12
    month = (month - 1) % 12 + 1
    seconds = calendar.timegm((year, month, 1, 0, 0, 0)) + (day - 1) * 86400
    seconds += hour * 3600 + minute * 60 + second
    nanos = 0
    for tag, data in _extras(info.extra):
        if tag == 0x000A and len(data) >= 4:
            at = 4
            while len(data) - at >= 4:
                attr, size = struct.unpack_from("<HH", data, at)
                at += 4
                if len(data) - at < size:
                    break
                if attr == 1 and size == 24:
                    ticks = struct.unpack_from("<Q", data, at)[0]
                    seconds = ticks // 10_000_000 - _NTFS_EPOCH
                    nanos = (ticks % 10_000_000) * 100
                at += size
        elif tag in (0x000D, 0x5855) and len(data) >= 8:
            seconds, nanos = struct.unpack_from("<I", data, 4)[0], 0
        elif tag == 0x5455 and len(data) >= 5 and data[0] & 1:
            seconds, nanos = struct.unpack_from("<I", data, 1)[0], 0
    return seconds, nanos


def _entry(info: zipfile.ZipInfo) -> Entry:
    raw = _raw_name(info)
    name = clean_name(raw)
    mode = _mode(info)
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFDIR:
        etype = EntryType.DIR
    elif kind == stat.S_IFREG:
        etype = EntryType.FILE
    elif kind == stat.S_IFLNK:
        etype = EntryType.SYMLINK
    else:
        raise _corrupt(f"{raw!r} is of type {kind:#o}: zip wares hold only files, dirs, symlinks")
    uid, gid = _owner(raw, info.extra)
    mtime, mtime_ns = _mtime(info)
    return Entry(
        name=name,
        type=etype,
        mode=stat.S_IMODE(mode),
        uid=uid,
        gid=gid,
        mtime=mtime,
        mtime_ns=mtime_ns,
        size=info.file_size if etype is EntryType.FILE else 0,
    )


def _content(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    try:
        with zf.open(info) as f:
            while block := f.read(BLOCK):
                yield block
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise _corrupt(f"cannot read {info.filename!r}: {exc}") from exc


def _members(zf: zipfile.ZipFile) -> Iterator[Plain]:
    for info in zf.infolist():
        entry = _entry(info)
        if entry.type is EntryType.SYMLINK:
            target = b"".join(_content(zf, info))
            entry.linkname = target.decode("utf-8", "surrogateescape")
            yield Plain(entry)
        elif entry.type is EntryType.FILE:
            yield Plain(entry, _content(zf, info))
        else:
            yield Plain(entry)


@contextmanager
def read_zip(stream: BinaryIO) -> Iterator[Iterator[Plain]]:
    """The members of the zip in ``stream``, in central-directory order.

    Raises ``FilesetError(WARE_CORRUPT)`` for anything that is not a
    readable zip, and for unsafe names.
    """
    with tempfile.TemporaryFile() as spool:
        seekable = False
        with suppress(AttributeError, OSError):
            seekable = stream.seekable()
        source: BinaryIO = stream
        if not seekable:
            shutil.copyfileobj(stream, spool, BLOCK)
            spool.seek(0)
            source = spool
        try:
            zf = zipfile.ZipFile(source)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise _corrupt(f"cannot read its directory: {exc}") from exc
        with zf:
            yield _members(zf)
