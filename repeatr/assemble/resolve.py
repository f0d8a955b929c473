"""Resolve container paths inside the new root, never following a symlink.

A mount destination comes from a formula and its parents come from wares: a
ware may hold ``etc -> /etc`` or ``x -> ../../..``. Walking it with the host's
path resolution would point a mount at the host. So destinations are walked
one component at a time with ``openat(O_PATH|O_NOFOLLOW)`` from a descriptor
of the root: a symlink anywhere on the way is an ``AssemblyError`` naming the
path (not followed even when it would stay inside the root: a mount onto a
link is ambiguous). Mounts then target ``/proc/self/fd/N``, the descriptor
itself, so no path is resolved twice.

Paths are container paths: absolute, normalised (``/a/b``), no ``.``/``..``.
"""

from __future__ import annotations

import os
import stat

from repeatr.errors import AssemblyError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the helper's start-up time; annotations only
    from typing import Literal, TypeAlias

    Create: TypeAlias = Literal["dir", "file"] | None


def split(path: str) -> list[str]:
    """Components of a normalised absolute container path; AssemblyError otherwise."""
    if not path.startswith("/"):
        raise AssemblyError(f"container path {path!r} is not absolute")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "//" in path or (path != "/" and path.endswith("/")):
        raise AssemblyError(f"container path {path!r} is not normalised (no '.', '..', '//')")
    if "\0" in path:
        raise AssemblyError(f"container path {path!r} holds a NUL byte")
    return parts


def fd_path(fd: int) -> str:
    """The magic link naming an open descriptor, usable as a mount source or target."""
    return f"/proc/self/fd/{fd}"


def open_root(root: str) -> int:
    """An O_PATH descriptor of the root directory (a host path chosen by repeatr)."""
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def open_in_root(
    root_fd: int,
    path: str,
    *,
    create: Create = None,
    mode: int = 0o755,
    created: list[str] | None = None,
) -> int:
    """Open container ``path`` below ``root_fd`` as O_PATH, refusing every symlink.

    ``create`` makes missing components: directories (mode 0755, root-owned)
    and, for ``"file"``, an empty last component. Paths created are appended
    to ``created``. The directory a component is created in keeps its mtime
    (the original's ``RepairMtime``): a mount point is not a change to the
    image. The caller closes the returned descriptor.
    """
    parts = split(path)
    fd = os.dup(root_fd)
    walked = ""
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            walked += "/" + name
            try:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise AssemblyError(f"{walked} does not exist in the container") from None
                parent = os.fstat(fd)
                if last and create == "file":
                    os.close(
                        os.open(
                            name,
                            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                            0o644,
                            dir_fd=fd,
                        )
                    )
                else:
                    os.mkdir(name, mode if last else 0o755, dir_fd=fd)
                os.utime(fd_path(fd), ns=(parent.st_atime_ns, parent.st_mtime_ns))
                if created is not None:
                    created.append(walked)
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except NotADirectoryError:
                raise AssemblyError(f"{walked}: a parent is not a directory") from None
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                raise AssemblyError(
                    f"{path}: {walked} is a symlink in the container; mounts and "
                    "cradle steps never follow symlinks (they could point at the host)"
                )
            if not last and not stat.S_ISDIR(st.st_mode):
                raise AssemblyError(f"{path}: {walked} is not a directory")
            if last and create == "dir" and not stat.S_ISDIR(st.st_mode):
                raise AssemblyError(f"{path} exists and is not a directory")
        return fd
    except BaseException:
        os.close(fd)
        raise
