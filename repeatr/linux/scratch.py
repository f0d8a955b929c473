"""Disk for a run's writable layers: a size-limited filesystem, or a watch on the host's.

``limits.disk`` (:mod:`repeatr.model.limits`): the sandbox helper makes a
sparse file of that size in the run's work dir, formats it ext4
(``mkfs.ext4``, no journal: it lives as long as the run), attaches it to a
loop device with ``LO_FLAGS_AUTOCLEAR`` and mounts it, in its own private
mount namespace, over the dir that holds every overlay's upper and work dirs.
A job that writes more gets ENOSPC from the kernel, exactly at the limit,
whatever runs it (ns, chroot, runc, crun, gvisor all get these overlays).
Nothing outlives the run: the mount dies with the helper's namespace (also
when repeatr is SIGKILLed: the helper follows its parent), the loop device
then detaches itself, and the image is a file in the work dir, which the
run removes, or the next run's gc when the run was killed.

Cost (docs/executors.md "Disk"): tens to hundreds of milliseconds per run
(mkfs, loop, mount), so it is only done when a formula asks. The default is
the cheap :class:`DiskWatch`: the helper checks the free space of the work
dir's filesystem while the job runs and stops a job that eats into the
host's last reserve.

Import-light: the sandbox helper imports this (stdlib and ``libc`` only).
"""

from __future__ import annotations

import os
import time

from repeatr.linux import libc

#: Below this an ext4 image has no room for anything (mkfs refuses below ~64 KiB).
MIN_SIZE = 1 << 20
_SEARCH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
#: A scratch filesystem counts as full (the limit was reached) with less free than this.
FULL_BELOW = 256 << 10
#: The default watch: stop a job when the work dir's filesystem has less free
#: than RESERVE_SHARE of its size (at most RESERVE_MAX) and the job used some of it.
RESERVE_SHARE = 0.05
RESERVE_MAX = 4 << 30
#: ... having used at least this much since it started (so a job is not
#: stopped for what others wrote).
RESERVE_BLAME = 64 << 20
#: How often the watch looks (one statvfs).
WATCH_INTERVAL = 0.2


def mkfs_path() -> str | None:
    """``mkfs.ext4`` (e2fsprogs), or None when it is not installed."""
    dirs = [*_SEARCH, *os.environ.get("PATH", "").split(":")]
    for d in dirs:
        path = os.path.join(d or ".", "mkfs.ext4")
        if os.access(path, os.X_OK):
            return path
    return None


def _mkfs(image: str) -> None:
    mkfs = mkfs_path()
    if mkfs is None:
        raise OSError(2, "mkfs.ext4 not found: limits.disk needs e2fsprogs")
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    errr, errw = os.pipe2(os.O_CLOEXEC)
    argv = [
        mkfs, "-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode",
        "-E", "lazy_itable_init=1,nodiscard,root_owner=0:0", image,
    ]
    try:
        pid = os.posix_spawn(
            mkfs, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, devnull, 1),
                (os.POSIX_SPAWN_DUP2, errw, 2),
            ],
        )
    finally:
        os.close(devnull)
        os.close(errw)
    chunks = []
    while chunk := os.read(errr, 4096):
        chunks.append(chunk)
    os.close(errr)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        said = b"".join(chunks).decode("utf-8", "replace").strip().splitlines()
        raise OSError(5, f"mkfs.ext4 {image}: {said[-1] if said else 'failed'}")


def make_image(image: str, size: int) -> None:
    """A new sparse file ``image`` of ``size`` bytes holding an empty ext4.

    Spawns ``mkfs.ext4``: call it before ``unshare(CLONE_NEWPID)``, or mkfs
    would become (and, exiting, end) the new pid namespace's init.
    """
    fd = os.open(image, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    _mkfs(image)


def mount_image(image: str, where: str) -> None:
    """Mount the ext4 in ``image`` on ``where`` through a loop device that detaches with it."""
    fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        loop_fd, device = libc.loop_attach(fd)
    finally:
        os.close(fd)
    try:
        os.makedirs(where, exist_ok=True)
        libc.mount(device, where, "ext4", libc.MS_NOSUID | libc.MS_NODEV, "")
    finally:
        os.close(loop_fd)  # the mount holds the device now; unmounted, it detaches


def is_full(where: str) -> bool:
    """True when the limited filesystem on ``where`` has (about) nothing left."""
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize < FULL_BELOW or st.f_favail == 0


class DiskWatch:
    """The default guard of the host's disk, when a formula sets no ``limits.disk``.

    Trips when the filesystem of ``where`` has less free space than the
    reserve (5% of its size, at most 4 GiB) and at least 64 MiB of it went
    while the job ran: the helper then kills the job, like a timeout. It
    looks every 0.2 s, so a job writing faster than the reserve per 0.2 s can
    still get ENOSPC from the host first; ``limits.disk`` is exact.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        st = os.statvfs(where)
        self.reserve = min(int(st.f_blocks * st.f_frsize * RESERVE_SHARE), RESERVE_MAX)
        self.start_free = st.f_bavail * st.f_frsize
        self.next = time.monotonic() + WATCH_INTERVAL

    def tripped(self) -> bool:
        self.next = time.monotonic() + WATCH_INTERVAL
        try:
            st = os.statvfs(self.where)
        except OSError:
            return False
        free = st.f_bavail * st.f_frsize
        return free < self.reserve and self.start_free - free >= RESERVE_BLAME
