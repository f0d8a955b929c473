"""Every direct kernel call repeatr makes, declared once (model: benchexec's libc.py).

Each foreign function is declared with ``use_errno=True`` and an errcheck that
raises ``OSError`` naming the call and its arguments; callers never compare
with -1. The typed wrappers below are the public surface: paths go through
``os.fsencode``. Constants cite the header they come from.

Namespaces (``unshare``/``setns``) are per thread: call them only from a
freshly started, single-threaded process (``repeatr.executors.sandbox``).

The job's own start (its /proc, ``pivot_root``, capabilities, ids,
no_new_privs, seccomp, ``execve``) is not here: it runs in a child that may
not run Python, compiled in ``_jobstart.c`` (``repeatr.executors.jobstart``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # kept out of the helper's start-up time
    from collections.abc import Callable
    from typing import Any, TypeAlias

    StrPath: TypeAlias = str | bytes | os.PathLike[str] | os.PathLike[bytes]

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _errcheck(result: Any, func: Any, args: tuple[Any, ...]) -> Any:
    if result == -1:
        err = ctypes.get_errno()
        shown = ", ".join(
            repr(os.fsdecode(a)) if isinstance(a, bytes) else str(a) for a in args
        )
        raise OSError(err, f"{func.__name__}({shown}): {os.strerror(err)}")
    return result


def _declare(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Callable[..., Any]:
    func = getattr(_libc, name)
    func.argtypes = argtypes
    func.restype = restype
    func.errcheck = _errcheck
    return func  # type: ignore[no-any-return]


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

_unshare = _declare("unshare", [ctypes.c_int])
_setns = _declare("setns", [ctypes.c_int, ctypes.c_int])


def unshare(flags: int) -> None:
    """unshare(2): move the calling thread into new namespaces."""
    _unshare(flags)


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace ``fd`` refers to."""
    _setns(fd, nstype)


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

_mount = _declare(
    "mount", [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
)
_umount2 = _declare("umount2", [ctypes.c_char_p, ctypes.c_int])


class MountAttr(ctypes.Structure):
    """struct mount_attr, /usr/include/linux/mount.h (MOUNT_ATTR_SIZE_VER0 = 32)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


_mount_setattr = _declare(
    "mount_setattr",
    [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(MountAttr), ctypes.c_size_t],
)


def mount(
    source: StrPath | None,
    target: StrPath,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2)."""
    _mount(
        _b(source),
        _b(target),
        None if fstype is None else fstype.encode(),
        flags,
        None if data is None else data.encode(),
    )


def umount2(target: StrPath, flags: int = 0) -> None:
    """umount2(2)."""
    _umount2(_b(target), flags)



def mount_setattr(
    dirfd: int, path: StrPath, flags: int, *, attr_set: int = 0, attr_clr: int = 0
) -> None:
    """mount_setattr(2): change mount attributes, recursively with AT_RECURSIVE."""
    attr = MountAttr(attr_set, attr_clr, 0, 0)
    _mount_setattr(dirfd, _b(path), flags, ctypes.byref(attr), ctypes.sizeof(attr))


# --- path resolution -------------------------------------------------------
# asm-generic/unistd.h: the unified syscall number (same on x86_64 and arm64)
SYS_openat2 = 437
# /usr/include/linux/openat2.h
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class OpenHow(ctypes.Structure):
    """struct open_how, /usr/include/linux/openat2.h."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.errcheck = _errcheck


def openat2(dirfd: int, path: StrPath, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open ``path`` below ``dirfd`` under the ``RESOLVE_*`` rules.

    ``openat2(rootfd, "a/b", os.O_PATH, RESOLVE_IN_ROOT)`` resolves every
    symlink as if ``rootfd`` were ``/``: nothing can escape the root.
    """
    how = OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = _syscall(
        ctypes.c_long(SYS_openat2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(_b(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return int(fd)


# --- process attributes ----------------------------------------------------
# /usr/include/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36

_prctl = _declare(
    "prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return int(_prctl(option, arg2, arg3, arg4, arg5))


def set_pdeathsig(sig: int) -> None:
    """Get ``sig`` when the parent *thread* dies. Credential changes clear it."""
    prctl(PR_SET_PDEATHSIG, sig)


def capbset_drop(cap: int) -> None:
    """Drop ``cap`` from this thread's bounding set (needs CAP_SETPCAP)."""
    prctl(PR_CAPBSET_DROP, cap)


def set_child_subreaper() -> None:
    """Orphaned descendants are reparented to us instead of the host's init."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


_sethostname = _declare("sethostname", [ctypes.c_char_p, ctypes.c_size_t])


def sethostname(name: str) -> None:
    """sethostname(2), in the calling process's UTS namespace."""
    raw = name.encode()
    _sethostname(raw, len(raw))


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
_socket = _declare("socket", [ctypes.c_int, ctypes.c_int, ctypes.c_int])


def link_up(name: str) -> None:
    """Set interface ``name`` up (ioctl SIOCSIFFLAGS), in the caller's network namespace."""
    fd = int(_socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0))
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
