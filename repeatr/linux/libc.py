"""Every direct kernel call repeatr makes, declared once (model: benchexec's libc.py).

Each foreign function is declared with ``use_errno=True`` and an errcheck that
raises ``OSError`` naming the call and its arguments; callers never compare
with -1. The typed wrappers below are the public surface: paths go through
``os.fsencode``. Constants cite the header they come from.

Namespaces (``unshare``/``setns``) are per thread: call them only from a
freshly started, single-threaded process (``repeatr.executors.sandbox``).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # kept out of the helper's start-up time
    from collections.abc import Callable, Iterable
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
_pivot_root = _declare("pivot_root", [ctypes.c_char_p, ctypes.c_char_p])


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


def pivot_root(new_root: StrPath, put_old: StrPath) -> None:
    """pivot_root(2); ``pivot_root(".", ".")`` stacks the old root on the new one."""
    _pivot_root(_b(new_root), _b(put_old))


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


# --- keyrings ----------------------------------------------------------------
# glibc has no keyctl (libkeyutils does): the raw system call. asm/unistd_64.h
# (x86_64) and asm-generic/unistd.h (arm64, riscv64)
SYS_keyctl = 250 if os.uname().machine == "x86_64" else 219
# /usr/include/linux/keyctl.h
KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEY_SPEC_SESSION_KEYRING = -3


def join_session_keyring() -> int:
    """keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL): a new anonymous session keyring
    for the calling thread (its serial); keys of the old one are no longer possessed."""
    return int(_syscall(
        ctypes.c_long(SYS_keyctl), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_char_p(None)
    ))


# --- process attributes ----------------------------------------------------
# /usr/include/linux/prctl.h
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_prctl = _declare(
    "prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2)."""
    return int(_prctl(option, arg2, arg3, arg4, arg5))


def set_pdeathsig(sig: int) -> None:
    """Get ``sig`` when the parent *thread* dies. Credential changes clear it."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> None:
    """Orphaned descendants are reparented to us instead of the host's init."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    """execve never grants privileges again (setuid bits, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


# /usr/include/linux/prctl.h, linux/seccomp.h
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
_SOCK_FILTER_SIZE = 8  # struct sock_filter (linux/filter.h): u16 code, u8 jt, u8 jf, u32 k


class SockFprog(ctypes.Structure):
    """struct sock_fprog, /usr/include/linux/filter.h."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_set_filter(program: bytes) -> None:
    """Install a seccomp filter (classic BPF, ``struct sock_filter`` array) on this thread.

    Needs no_new_privs (or CAP_SYS_ADMIN); the filter is inherited by every
    child and kept across execve, and can never be removed.
    """
    if not program or len(program) % _SOCK_FILTER_SIZE:
        raise OSError(22, f"seccomp filter of {len(program)} bytes is not a BPF program")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // _SOCK_FILTER_SIZE, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


_sethostname = _declare("sethostname", [ctypes.c_char_p, ctypes.c_size_t])


def sethostname(name: str) -> None:
    """sethostname(2), in the calling process's UTS namespace."""
    raw = name.encode()
    _sethostname(raw, len(raw))


# --- capabilities ----------------------------------------------------------
# /usr/include/linux/capability.h
LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapHeader(ctypes.Structure):
    """struct __user_cap_header_struct."""

    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    """struct __user_cap_data_struct (two of them for 64 capabilities)."""

    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_capget = _declare("capget", [ctypes.POINTER(CapHeader), ctypes.POINTER(CapData * 2)])
_capset = _declare("capset", [ctypes.POINTER(CapHeader), ctypes.POINTER(CapData * 2)])


def _mask(caps: Iterable[int]) -> int:
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def capget() -> tuple[int, int, int]:
    """(effective, permitted, inheritable) of the calling thread, as bit masks."""
    hdr = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    _capget(ctypes.byref(hdr), ctypes.byref(data))
    eff = data[0].effective | data[1].effective << 32
    prm = data[0].permitted | data[1].permitted << 32
    inh = data[0].inheritable | data[1].inheritable << 32
    return eff, prm, inh


def capset(effective: Iterable[int], permitted: Iterable[int], inheritable: Iterable[int]) -> None:
    """capset(2) for the calling thread."""
    e, p, i = _mask(effective), _mask(permitted), _mask(inheritable)
    hdr = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)(
        CapData(e & 0xFFFFFFFF, p & 0xFFFFFFFF, i & 0xFFFFFFFF),
        CapData(e >> 32, p >> 32, i >> 32),
    )
    _capset(ctypes.byref(hdr), ctypes.byref(data))


def capbset_read(cap: int) -> bool:
    """Is ``cap`` in the bounding set?"""
    return prctl(PR_CAPBSET_READ, cap) == 1


def capbset_drop(cap: int) -> None:
    """Drop ``cap`` from the bounding set (needs CAP_SETPCAP)."""
    prctl(PR_CAPBSET_DROP, cap)


def set_keepcaps(on: bool) -> None:
    """Keep permitted capabilities across setuid away from 0."""
    prctl(PR_SET_KEEPCAPS, int(on))


def ambient_clear_all() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def ambient_raise(cap: int) -> None:
    """Add ``cap`` to the ambient set (must be permitted and inheritable)."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


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
