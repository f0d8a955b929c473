"""Build real tar archives, hostile ones included, with the standard tarfile module.

``tarfile`` writes what it is given: absolute names, ``..`` components,
links anywhere. Each helper returns a ``(TarInfo, content)`` pair; ``build``
turns a list of them into archive bytes (gzip'd by default, like wares).
"""

from __future__ import annotations

import gzip
import io
import tarfile

from repeatr.fileset.limits import Limits

Member = tuple[tarfile.TarInfo, bytes | None]

MTIME = 1_500_000_000


def _info(name: str, kind: bytes, mode: int, uid: int, gid: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.mtime = mtime
    info.uname = info.gname = ""
    return info


def file(
    name: str,
    data: bytes = b"",
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: float = MTIME,
) -> Member:
    info = _info(name, tarfile.REGTYPE, mode, uid, gid, mtime)
    info.size = len(data)
    return info, data


def directory(
    name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: float = MTIME
) -> Member:
    return _info(name, tarfile.DIRTYPE, mode, uid, gid, mtime), None


def symlink(name: str, target: str, *, uid: int = 0, gid: int = 0, mtime: float = MTIME) -> Member:
    info = _info(name, tarfile.SYMTYPE, 0o777, uid, gid, mtime)
    info.linkname = target
    return info, None


def hardlink(name: str, target: str) -> Member:
    info = _info(name, tarfile.LNKTYPE, 0o644, 0, 0, MTIME)
    info.linkname = target
    return info, None


def chardev(name: str, major: int = 1, minor: int = 3, *, mode: int = 0o666) -> Member:
    info = _info(name, tarfile.CHRTYPE, mode, 0, 0, MTIME)
    info.devmajor = major
    info.devminor = minor
    return info, None


def fifo(name: str, *, mode: int = 0o640, mtime: float = MTIME) -> Member:
    return _info(name, tarfile.FIFOTYPE, mode, 0, 0, mtime), None


def build(
    members: list[Member],
    *,
    gz: bool = True,
    pax_headers: dict[str, dict[str, str]] | None = None,
) -> bytes:
    """Archive bytes holding ``members`` in order (PAX format, so ns mtimes survive).

    ``pax_headers`` adds per-member PAX records by name (e.g. xattrs).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if pax_headers and info.name in pax_headers:
                info.pax_headers = dict(pax_headers[info.name])
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    body = raw.getvalue()
    return gzip.compress(body, mtime=0) if gz else body


def nested(depth: int) -> list[Member]:
    """``d/d/.../d/f``: ``depth`` directories, one per level (deeper than Python's recursion
    limit: a recursive remover, ``shutil.rmtree`` included, raises RecursionError on it).
    Unpacking it needs limits above the defaults: :func:`deep_limits`."""
    names = ["/".join(["d"] * level) for level in range(1, depth + 1)]
    return [*(directory(name) for name in names), file(f"{names[-1]}/f", b"leaf")]


def deep_limits(depth: int) -> Limits:
    """Limits an archive ``depth`` levels deep passes (paths of 2 bytes a level)."""
    return Limits(max_depth=depth + 1, max_name_length=2 * depth + 16)
