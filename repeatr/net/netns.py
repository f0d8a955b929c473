"""Named network namespaces: an nsfs bind mount on a file, as ``ip netns add`` makes them.

A run's namespace is a file (by default ``/run/netns/repeatr-<run_id>``)
on which the namespace is bind-mounted. Executors join it with
``setns(open(path), CLONE_NEWNET)``; OCI runtimes take the path in the
spec; people can look at it with ``ip netns list`` / ``ip netns exec``.

How it is made, without forking: the calling thread (a worker thread, as
every blocking call here) saves its own namespace, ``unshare(CLONE_NEWNET)``
(which moves only that thread), bind-mounts ``/proc/thread-self/ns/net``
onto the file, does what must be done inside (loopback up, open a netlink
socket that stays bound to the new namespace), and ``setns`` back. Tools
that fork a child process to do this (pyroute2's ``netns.create``, for
one) fall into a known trap: forking a threaded Python process (it hung
BenchExec; see the project's host notes).

The directory is a plain directory: repeatr makes no mount on the host
but the namespace files themselves, and removes those. (``ip netns add``
also binds ``/run/netns`` onto itself and makes it ``MS_SHARED``, a
permanent host change, so that unmounting a namespace file would propagate
to the copies other mount namespaces got. Since Linux 3.18 unlinking the
file detaches those copies in every mount namespace, which :func:`remove`
does. If ``ip`` made the directory a mount point, repeatr uses it as is.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from repeatr.errors import NetworkError
from repeatr.linux import libc

_THREAD_NETNS = "/proc/thread-self/ns/net"


def ensure_netns_dir(netns_dir: Path) -> None:
    """Create ``netns_dir`` (a plain directory, no mount: see the module doc). Idempotent."""
    netns_dir.mkdir(mode=0o755, parents=True, exist_ok=True)


@contextmanager
def inside_new_netns(path: Path) -> Iterator[None]:
    """Create a network namespace named by ``path`` and run the block inside it.

    Only the calling thread enters the namespace, and it always returns to
    the one it was in. Sockets opened in the block stay bound to the new
    namespace after it. If the block fails, the namespace is removed again.
    ``path`` must not exist (a leftover is the caller's to remove).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0)
    except FileExistsError:
        raise NetworkError(
            f"network namespace {path} already exists",
            hint="a previous run with this ID left it behind: run `repeatr gc`",
        ) from None
    os.close(fd)
    home = os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            libc.unshare(libc.CLONE_NEWNET)
        except BaseException:
            _unlink(path)
            raise
        try:
            libc.mount(_THREAD_NETNS, path, None, libc.MS_BIND)
            yield
        except BaseException:
            remove(path)
            raise
        finally:
            # Never leave a (reused) worker thread in the run's namespace.
            libc.setns(home, libc.CLONE_NEWNET)
    finally:
        os.close(home)


def remove(path: Path) -> bool:
    """Unmount and unlink a named namespace; False if there was none. Idempotent.

    The namespace itself goes when its last user (process, mount, open fd)
    does; with the veth deleted first, what may linger holds only ``lo``.
    """
    found = False
    try:
        libc.umount2(path, libc.MNT_DETACH | libc.UMOUNT_NOFOLLOW)
        found = True
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted
            raise
    return _unlink(path) or found


def is_netns(path: Path) -> bool:
    """Is ``path`` a mounted network namespace (nsfs)?"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    # A bind-mounted namespace lives on nsfs: a different device than its directory.
    try:
        return st.st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
