"""cpio archives in the kernel's ``newc`` format, for initramfs images.

The kernel unpacks every archive concatenated in the initramfs, later
entries over earlier ones (``Documentation/driver-api/early-userspace``):
the guest's base image is one archive prepared once, each job's data a
small one appended to it. Entries carry no host ownership or times (uid
and gid 0, mtime 0), so an archive depends only on what is put in it.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One archive member: a path (no leading slash), its mode (with the type bits), data."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node


def directory(path: str, mode: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | mode)


def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | mode, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | mode, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _member(ino: int, entry: Entry) -> bytes:
    name = entry.path.lstrip("/").encode() + b"\0"
    fields = (
        ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1],
        len(name), 0,
    )
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    head = header + name
    return head + _pad(len(head)) + entry.data + _pad(len(entry.data))


def archive(entries: list[Entry]) -> bytes:
    """A newc archive of ``entries``, in order (parents before children), with its trailer."""
    parts = [_member(i + 1, e) for i, e in enumerate(entries)]
    parts.append(_member(0, Entry(TRAILER, 0)))
    return b"".join(parts)
