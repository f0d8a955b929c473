"""Before outputs are packed: take repeatr's own mounts out of the container root.

What repeatr mounted (``/dev``, ``/proc``, a runtime's ``/sys``, DNS files,
bind mounts of host paths, anything a runtime or the job mounted) is not
part of an output; what the job wrote is. So once the job and every process
it started are gone, the helper, in its private mount namespace:

1. unmounts every mount under the root except the container's layers
   (``Op.layer``: recorded by mount ID right after assembly, ``layer_ids``)
   and except a mount an output path is at or under (an output that is a
   ``mount:`` input packs that directory, as the original did);
2. removes the mount points repeatr created for them (``Root.mountpoints``),
   deepest first, where they are still empty, keeping their parents' mtimes.

The parent then packs through ``/proc/<helper>/root/<root>`` and sees the
image and what the job wrote, nothing else: packing ``/`` with every filter
on ``keep`` gives the input ware back (the original's
``example_06_roundtripRootfs``) on every executor.

Import-light: runs in the sandbox helper.
"""

from __future__ import annotations

import os
import stat

from repeatr.assemble.resolve import fd_path
from repeatr.errors import AssemblyError
from repeatr.linux import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from repeatr.assemble.ops import Op, Root

_UMOUNT_NOFOLLOW = 0x8  # /usr/include/linux/fs.h


def _unescape(field: str) -> str:
    r"""A mountinfo path: the kernel writes space, tab, newline and ``\`` as ``\ooo``."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit() and len(field[i + 1 : i + 4]) == 3:
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts_under(root: str) -> list[tuple[int, str]]:
    """(mount ID, mount point) of every mount at or under ``root``, in mountinfo order."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ", 5)
            point = _unescape(fields[4])
            if point == root or point.startswith(root + "/"):
                found.append((int(fields[0]), point))
    return found


def container_path(root: Root, point: str) -> str:
    return "/" + point[len(root.path) :].strip("/")


def layer_ids(root: Root, ops: Iterable[Op]) -> frozenset[int]:
    """Mount IDs of the container's layers, taken right after assembly."""
    targets = {op.target for op in ops if op.layer}
    return frozenset(
        mid for mid, point in mounts_under(root.path) if container_path(root, point) in targets
    )


def prepare(root: Root, paths: Iterable[str]) -> None:
    """Create (and record) the mount points of mounts made later: /proc from the
    job's side, a runtime's /proc, /dev, /sys."""
    for path in paths:
        try:
            fd = root.open(path, "dir", root.mountpoints)
        except (AssemblyError, OSError):
            continue  # a bad path (a symlink, a file) fails later, where it is mounted
        os.close(fd)


def _holds_output(target: str, outputs: Iterable[str]) -> bool:
    prefix = target.rstrip("/") + "/"
    return any(out == target or out.startswith(prefix) for out in outputs)


def release(root: Root, layers: frozenset[int], outputs: Iterable[str]) -> None:
    """Unmount what is not a layer (nor holds an output), then remove its mount points.

    Nothing at all when ``root.releasing`` is off: the helper turns it off
    for a job without outputs whose mounts are all layers or repeatr's own
    (no bind of a host path): nothing is packed, every mount goes with the
    helper's mount namespace and every mount point with the work dir. That
    saves reading ``mountinfo`` twice and a umount2 and an rmdir per mount.
    """
    if not root.releasing:
        return
    outputs = list(outputs)
    for mid, point in reversed(mounts_under(root.path)):
        if mid in layers or _holds_output(container_path(root, point), outputs):
            continue
        try:  # noqa: SIM105 (contextlib: the helper's start-up time)
            libc.umount2(point, libc.MNT_DETACH | _UMOUNT_NOFOLLOW)
        except OSError:
            pass  # gone already, with the mount it was under
    for path in reversed(root.mountpoints):
        _remove_mountpoint(root, path)


def _remove_mountpoint(root: Root, path: str) -> None:
    parent, name = os.path.split(path)
    try:
        pfd = root.open(parent or "/")
    except (AssemblyError, OSError):
        return  # the job removed or replaced a parent: nothing of ours is left there
    try:
        before = os.fstat(pfd)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=pfd)
        elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
            os.unlink(name, dir_fd=pfd)
        else:
            return
        os.utime(fd_path(pfd), ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError:
        pass  # not empty (the job wrote there), or still a mount point: it stays
    finally:
        os.close(pfd)
