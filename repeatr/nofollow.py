"""Writing below a directory without following a symlink on the way.

Some trees repeatr writes into come with someone else's files in them: a
workspace's ``.timeless/`` is usually part of a checkout, and git keeps
symlinks. Were ``.timeless/candidates`` a symlink to ``/etc``, a
``module run`` as root would write there. So every directory from a
trusted ``root`` down to the file is opened with ``O_NOFOLLOW`` relative
to its parent's descriptor (made when missing), and the file is written as
a temp file renamed into place through that descriptor: no path is
resolved twice, so a symlink swapped in meanwhile is not followed either.

:class:`SymlinkInPath` says which path was a symlink (or not a directory).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SymlinkInPath(Exception):
    """``path`` (under the trusted root) is a symlink or not a directory."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"{path} is {what}")
        self.path = path
        self.what = what


def _open_child(parent: int, name: str, path: Path, create: bool) -> int:
    if not name or name in (".", "..") or "/" in name:
        raise ValueError(f"{name!r} is not one path component")
    for attempt in (0, 1):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create or attempt:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise SymlinkInPath(path, what) from exc
    raise AssertionError("unreachable")


@contextlib.contextmanager
def open_dir(root: Path, parts: Sequence[str], *, create: bool = True) -> Iterator[int]:
    """A descriptor of ``root/parts...``, no symlink followed below ``root``.

    ``root`` itself is opened as given (the caller trusts it); each of
    ``parts`` is made (mode 0755) when missing and ``create``. Raises
    :class:`SymlinkInPath`, or ``OSError`` (``FileNotFoundError`` when one
    is missing and not ``create``).
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        here = Path(root)
        for part in parts:
            here = here / part
            child = _open_child(fd, part, here, create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def write_file(root: Path, parts: Sequence[str], name: str, data: bytes, mode: int = 0o644) -> Path:
    """Write ``root/parts.../name`` atomically (temp file + rename), no symlink followed.

    A symlink already at ``name`` is replaced, not followed. Returns the path.
    """
    with open_dir(root, parts) as dirfd:
        temp = f".{name}.tmp-{secrets.token_hex(8)}"
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
            dir_fd=dirfd,
        )
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dirfd)
            raise
        os.fsync(dirfd)
    return Path(root).joinpath(*parts, name)
