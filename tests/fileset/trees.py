"""Real directory trees and real archives for the fileset tests.

Archives come from GNU tar (``gnu_tar``) or Python's tarfile (``py_tar``),
never from our own writer, so the reader and the tree hash are checked
against independent producers.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

from repeatr.fileset.entry import EntryType
from repeatr.fileset.reader import read_archive
from tests.rio import FIXTURES, SANS_BASE, WITH_BASE

__all__ = ["FIXTURES", "SANS_BASE", "WITH_BASE"]

#: Published IDs (compat.md; the kitchen sink's from rio's own tests).
KITCHEN_SINK = "tar:2jkqXaVWCdH7axj1XW56rxZ6WVQ8f46nqMf2BBX7kjLsU9DsvQCquEoy6GcBcQ1Fqc"
DIR_BAR = "tar:26pqLaHWGFWi7WuBrreDtcs9ZR9dtmdQ3cCHySzb9Z6kBksDXg7u5tN6yvDUGyTHiN"

MTIME = 1_262_304_000


def gnu_tar(src: Path, *args: str, members: tuple[str, ...] = (".",)) -> bytes:
    """Archive ``src`` with GNU tar (numeric owners, sorted) and return the bytes."""
    return subprocess.run(
        [
            "tar",
            "-C",
            os.fspath(src),
            "--numeric-owner",
            "--sort=name",
            *args,
            "-cf",
            "-",
            *members,
        ],
        check=True,
        capture_output=True,
    ).stdout


def gnu_extract(data: bytes, dest: Path, *args: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["tar", "-C", os.fspath(dest), "--numeric-owner", *args, "-xf", "-"],
        input=data,
        check=True,
        capture_output=True,
    )


def py_tar(members: list[tuple[tarfile.TarInfo, bytes | None]], **kwargs: object) -> bytes:
    """A tar written by Python's tarfile (pax format unless told otherwise)."""
    buf = io.BytesIO()
    kwargs.setdefault("format", tarfile.PAX_FORMAT)
    with tarfile.open(fileobj=buf, mode="w", **kwargs) as tf:  # type: ignore[call-overload]
        for info, content in members:
            if content is not None:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
            else:
                tf.addfile(info)
    return buf.getvalue()


def info(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    mode: int = 0o644,
    uid: int = 1000,
    gid: int = 1000,
    mtime: float = MTIME,
    linkname: str = "",
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.uid = uid
    ti.gid = gid
    ti.mtime = mtime
    ti.linkname = linkname
    ti.uname = ti.gname = ""
    return ti


def make_tree(root: Path) -> None:
    """A small tree with every packable kind of entry except devices."""
    root.mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "a").mkdir()
    (root / "a" / "b").write_bytes(b"x" * 5000)
    (root / "a-b").write_bytes(b"")
    (root / "a" / "deep" / "er").mkdir(parents=True)
    (root / "a" / "deep" / "er" / "big").write_bytes(os.urandom(3 << 20))
    (root / "link").symlink_to("a/b")
    (root / "dangling").symlink_to("nowhere")
    (root / "empty").mkdir()
    (root / "exec").write_bytes(b"#!/bin/sh\n")
    (root / "exec").chmod(0o755)
    os.mkfifo(root / "fifo")
    long_dir = root / ("d" * 90) / ("e" * 90)
    long_dir.mkdir(parents=True)
    (long_dir / ("f" * 120)).write_bytes(b"long name")
    (root / "ünïcode").write_bytes(b"u")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (MTIME, MTIME + 0.25), follow_symlinks=False)


def listing(data: bytes) -> list[tuple[str, EntryType, str, bytes]]:
    """(name, type, linkname, sha384 of content) of every member, as our reader sees it."""
    out = []
    with read_archive(io.BytesIO(data)) as members:
        for m in members:
            out.append((m.entry.name, m.entry.type, m.entry.linkname, m.read_digest()))
    return out


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def nest(top: Path, depth: int) -> None:
    """Make ``top/d/d/.../d/f``, ``depth`` dirs below ``top``: deeper than Python's
    recursion limit, the path too long to name (made fd-relative). Whoever makes one
    removes it in a ``finally`` with ``repeatr.linux.rmtree``: pytest's cleanup of old
    base temp dirs recurses, and fails a later session at exit."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = sub
    os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
    os.close(fd)
