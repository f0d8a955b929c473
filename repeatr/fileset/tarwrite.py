"""Tar headers: ustar, with a PAX extended header only when a field does not fit.

Why our own writer and not ``tarfile``: packing builds one header per entry
and ``tarfile.TarInfo.tobuf`` costs ~10x more than formatting the 512 bytes
here; and the output must be byte-identical for the same tree, which is
easiest to guarantee when every byte is ours.

What goes into a header: the name (``./path``, ``/`` on dirs), mode & 07777,
uid, gid, size, mtime in whole seconds, type, link target, device numbers.
uname/gname are left empty (numeric ids only: the names are host-specific
and not part of the fileset). A name that does not fit ustar's 100-byte
name field is split into prefix/name when possible, otherwise it (and a
long link target, an id above 2097151, a size of 8 GiB or more, an mtime
outside 0..8^11-1) goes into a PAX ``x`` header before the entry.
"""

from __future__ import annotations

BLOCK = 512
ZERO_BLOCK = b"\0" * BLOCK
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)

_MAX_ID = 0o7777777
_MAX_NUM12 = 0o77777777777
_MAGIC = b"ustar\x0000"
_UGNAME = b"\0" * 64
_PAD12 = b"\0" * 12
_DEV_ZERO = b"0000000\0"
_CHKSUM_BLANK = b"        "

TYPE_FILE = b"0"
TYPE_SYMLINK = b"2"
TYPE_CHAR = b"3"
TYPE_BLOCK = b"4"
TYPE_DIR = b"5"
TYPE_FIFO = b"6"
TYPE_PAX = b"x"


def padding(size: int) -> bytes:
    """Zero bytes that pad ``size`` bytes of content to a 512-byte boundary."""
    rem = size % BLOCK
    return b"\0" * (BLOCK - rem) if rem else b""


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for ustar if a ``/`` splits it into <=155 and <=100 bytes."""
    if len(name) > 256:
        return None
    # The rightmost "/" that leaves <=100 bytes for the name part.
    start = max(0, len(name) - 101)
    idx = name.find(b"/", start)
    while idx != -1:
        if idx <= 155 and 0 < len(name) - idx - 1 <= 100:
            return name[:idx], name[idx + 1 :]
        idx = name.find(b"/", idx + 1)
    return None


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _raw_header(
    name: bytes,
    prefix: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes,
    devmajor: int,
    devminor: int,
) -> bytes:
    dev = (
        b"%07o\0%07o\0" % (devmajor, devminor)
        if typeflag in (TYPE_CHAR, TYPE_BLOCK)
        else _DEV_ZERO + _DEV_ZERO
    )
    header = bytearray(
        name.ljust(100, b"\0")
        + b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
        + _CHKSUM_BLANK
        + typeflag
        + linkname.ljust(100, b"\0")
        + _MAGIC
        + _UGNAME
        + dev
        + prefix.ljust(155, b"\0")
        + _PAD12
    )
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def header(
    name: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """The header block(s) for one entry: a PAX header first if needed."""
    pax: list[bytes] = []
    prefix = b""
    if len(name) > 100:
        split = _split_ustar(name)
        if split is not None:
            prefix, name = split
        else:
            pax.append(_pax_record("path", name))
            name = name[:100]
    if len(linkname) > 100:
        pax.append(_pax_record("linkpath", linkname))
        linkname = linkname[:100]
    if not 0 <= uid <= _MAX_ID:
        pax.append(_pax_record("uid", str(uid).encode()))
        uid = 0
    if not 0 <= gid <= _MAX_ID:
        pax.append(_pax_record("gid", str(gid).encode()))
        gid = 0
    if size > _MAX_NUM12:
        pax.append(_pax_record("size", str(size).encode()))
        size = 0
    if not 0 <= mtime <= _MAX_NUM12:
        pax.append(_pax_record("mtime", str(mtime).encode()))
        mtime = 0 if mtime < 0 else _MAX_NUM12
    main = _raw_header(
        name, prefix, mode, uid, gid, size, mtime, typeflag, linkname, devmajor, devminor
    )
    if not pax:
        return main
    body = b"".join(pax)
    pax_name = b"./PaxHeaders/" + name.rstrip(b"/").rpartition(b"/")[2][:80]
    ext = _raw_header(pax_name, b"", 0o644, 0, 0, len(body), 0, TYPE_PAX, b"", 0, 0)
    return ext + body + padding(len(body)) + main
