"""Every direct kernel call repeatr makes, declared once (model: benchexec's libc.py).

The calls are made by a compiled module (``_libc.c``), which returns
``-errno`` when one fails; ``_check`` here raises ``OSError`` naming the call
and its arguments, so callers never compare with -1. The typed wrappers below
are the public surface: paths go through ``os.fsencode``. Constants cite the
header they come from.

Not ctypes: every run imports this module (the sandbox server and helper
mount, unshare, prctl... through it), and ``import ctypes`` alone costs ~5 ms
of CPU (``python -S -c``); a lean run's CPU is 1-3 ms less without it
(``scripts/bench/lean_cpu.py``, quiet host; docs/design.md).

Namespaces (``unshare``/``setns``) are per thread: call them only from a
freshly started, single-threaded process (``repeatr.executors.sandbox``).

The job's own start (its /proc, ``pivot_root``, capabilities, ids,
no_new_privs, seccomp, ``execve``) is not here: it runs in a child that may
not run Python, compiled in ``_jobstart.c`` (``repeatr.executors.jobstart``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from repeatr.linux import _libc

TYPE_CHECKING = False
if TYPE_CHECKING:  # kept out of the helper's start-up time
    from typing import TypeAlias

    StrPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]


def _check(result: int, call: str, *args: object) -> int:
    """``result`` of ``call``, or the ``OSError`` its ``-errno`` stands for."""
    if result < 0:
        err = -result
        shown = ", ".join(
            repr(os.fsdecode(a)) if isinstance(a, bytes) else str(a) for a in args
        )
        raise OSError(err, f"{call}({shown}): {os.strerror(err)}")
    return result


def _b(path: StrPath | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


# --- namespaces ------------------------------------------------------------
# /usr/include/linux/sched.h
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


def unshare(flags: int) -> None:
    """unshare(2): move the calling thread into new namespaces."""
    _check(_libc.unshare(flags), "unshare", flags)


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace ``fd`` refers to."""
    _check(_libc.setns(fd, nstype), "setns", fd, nstype)


# --- mounts ----------------------------------------------------------------
# /usr/include/linux/mount.h
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_STRICTATIME = 0x1000000
# /usr/include/linux/fs.h (umount2 flags)
MNT_FORCE = 0x1
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
# /usr/include/linux/mount.h (mount_setattr)
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
# /usr/include/linux/fcntl.h
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000


def mount(
    source: StrPath | None,
    target: StrPath,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2)."""
    args = (
        _b(source),
        os.fsencode(target),
        None if fstype is None else fstype.encode(),
        flags,
        None if data is None else data.encode(),
    )
    _check(_libc.mount(*args), "mount", *args)


def umount2(target: StrPath, flags: int = 0) -> None:
    """umount2(2)."""
    raw = os.fsencode(target)
    _check(_libc.umount2(raw, flags), "umount2", raw, flags)


def mount_setattr(
    dirfd: int, path: StrPath, flags: int, *, attr_set: int = 0, attr_clr: int = 0
) -> None:
    """mount_setattr(2): change mount attributes, recursively with AT_RECURSIVE.

    ``struct mount_attr`` (/usr/include/linux/mount.h, MOUNT_ATTR_SIZE_VER0)
    is built in C from ``attr_set`` and ``attr_clr``: no propagation, no idmap.
    """
    raw = os.fsencode(path)
    _check(
        _libc.mount_setattr(dirfd, raw, flags, attr_set, attr_clr),
        "mount_setattr", dirfd, raw, flags, f"attr_set={attr_set:#x}", f"attr_clr={attr_clr:#x}",
    )


# --- path resolution -------------------------------------------------------
# /usr/include/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


def openat2(dirfd: int, path: StrPath, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open ``path`` below ``dirfd`` under the ``RESOLVE_*`` rules.

    ``openat2(rootfd, "a/b", os.O_PATH, RESOLVE_IN_ROOT)`` resolves every
    symlink as if ``rootfd`` were ``/``: nothing can escape the root.
    (``struct open_how``, /usr/include/linux/openat2.h, is built in C.)
    """
    raw = os.fsencode(path)
    flags |= os.O_CLOEXEC
    return _check(
        _libc.openat2(dirfd, raw, flags, mode, resolve),
        "openat2", dirfd, raw, f"flags={flags:#o}", f"resolve={resolve:#x}", f"mode={mode:#o}",
    )


# --- process attributes ----------------------------------------------------
# /usr/include/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return _check(
        _libc.prctl(option, arg2, arg3, arg4, arg5), "prctl", option, arg2, arg3, arg4, arg5
    )


def set_pdeathsig(sig: int) -> None:
    """Get ``sig`` when the parent *thread* dies. Credential changes clear it."""
    prctl(PR_SET_PDEATHSIG, sig)


def capbset_drop(cap: int) -> None:
    """Drop ``cap`` from this thread's bounding set (needs CAP_SETPCAP)."""
    prctl(PR_CAPBSET_DROP, cap)


def set_child_subreaper() -> None:
    """Orphaned descendants are reparented to us instead of the host's init."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def sethostname(name: str) -> None:
    """sethostname(2), in the calling process's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw), "sethostname", raw, len(raw))


# --- network interfaces ----------------------------------------------------
# /usr/include/linux/sockios.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
# /usr/include/linux/if.h
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, ifr_flags, union padding (40 bytes)


# /usr/include/linux/socket.h, linux/net.h (the socket module is not imported: start-up time)
AF_INET = 2
SOCK_DGRAM = 2
SOCK_CLOEXEC = 0o2000000


def link_up(name: str) -> None:
    """Set interface ``name`` up (ioctl SIOCSIFFLAGS), in the caller's network namespace."""
    fd = _check(
        _libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket", AF_INET,
        SOCK_DGRAM | SOCK_CLOEXEC, 0,
    )
    try:
        res = fcntl.ioctl(fd, SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0))
        flags = _IFREQ.unpack(res)[1]
        fcntl.ioctl(fd, SIOCSIFFLAGS, _IFREQ.pack(name.encode(), flags | IFF_UP))
    except OSError as e:
        msg = f"ioctl(SIOCSIFFLAGS, {name!r}, IFF_UP): {os.strerror(e.errno or 0)}"
        raise OSError(e.errno, msg) from e
    finally:
        os.close(fd)


# --- loop devices (/usr/include/linux/loop.h) --------------------------------
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4
# struct loop_config: __u32 fd, __u32 block_size, struct loop_info64 info
# (5 x __u64; __u32 lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags;
# __u8 lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32]; __u64 lo_init[2]),
# __u64 __reserved[8]: 304 bytes.
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")


def loop_attach(backing_fd: int, *, attempts: int = 16) -> tuple[int, str]:
    """A free loop device backed by ``backing_fd``: (its fd, its path).

    ``LO_FLAGS_AUTOCLEAR``: the device detaches itself when the last user
    closes it, i.e. once the filesystem on it is unmounted and this fd is
    closed, so a mount that dies with its namespace leaves no device behind.
    Another process may take the free device between asking and configuring
    it (EBUSY): then ask again.
    """
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(attempts):
            try:
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            except OSError as e:
                msg = f"ioctl(LOOP_CTL_GET_FREE): {os.strerror(e.errno or 0)}"
                raise OSError(e.errno, msg) from e
            path = f"/dev/loop{number}"
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            config = _LOOP_CONFIG.pack(
                backing_fd, 0, 0, 0, 0, 0, 0, 0, 0, 0, LO_FLAGS_AUTOCLEAR, b"", b"", b"", 0, 0,
                *([0] * 8),
            )
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, config)
            except OSError as e:
                os.close(fd)
                if e.errno == errno.EBUSY:
                    continue
                msg = f"ioctl(LOOP_CONFIGURE, {path}): {os.strerror(e.errno or 0)}"
                raise OSError(e.errno, msg) from e
            return fd, path
        raise OSError(errno.EBUSY, "ioctl(LOOP_CONFIGURE): every free loop device was taken")
    finally:
        os.close(ctl)
