"""libseccomp through ctypes: compile a seccomp filter to classic BPF bytes.

Only the parent uses it (``repeatr.executors.seccomp``): the sandbox helper
stays import-light and installs the finished bytes with
``repeatr.linux.libc.seccomp_set_filter``. The library is Debian's
``libseccomp2`` (``libseccomp.so.2``); runc is built against the same one, so
both resolve syscall names the same way.

Every function here returns a negative errno on failure (``seccomp_init``:
NULL); the errcheck turns that into ``OSError`` naming the call.
Constants cite ``/usr/include/seccomp.h`` (libseccomp-dev 2.5).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# seccomp.h: actions
ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000


def act_errno(errno: int) -> int:
    """SCMP_ACT_ERRNO(errno): the call fails with ``errno``."""
    return _ACT_ERRNO | (errno & 0xFFFF)


# seccomp.h: enum scmp_compare
CMP_NE = 1
CMP_LT = 2
CMP_LE = 3
CMP_EQ = 4
CMP_GE = 5
CMP_GT = 6
CMP_MASKED_EQ = 7
# seccomp.h: enum scmp_filter_attr
FLTATR_CTL_OPTIMIZE = 8  # 2: a binary tree of syscall numbers instead of a linear list
# seccomp.h: __NR_SCMP_ERROR, what resolving an unknown name returns
NR_SCMP_ERROR = -1


class ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp: ``arg`` compared with ``op`` (MASKED_EQ: arg & a == b)."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class LibseccompMissing(OSError):
    """libseccomp.so.2 cannot be loaded."""


def _errcheck(result: Any, func: Any, args: tuple[Any, ...]) -> Any:
    if isinstance(result, int) and result < 0:
        shown = ", ".join(str(a) for a in args[1:])  # args[0] is the context pointer
        raise OSError(-result, f"{func.__name__}({shown}): {os.strerror(-result)}")
    return result


class _Version(ctypes.Structure):
    """struct scmp_version."""

    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@dataclass(frozen=True)
class _Lib:
    init: Callable[..., Any]
    release: Callable[..., Any]
    arch_add: Callable[..., Any]
    arch_resolve_name: Callable[..., Any]
    resolve_name: Callable[..., Any]
    resolve_name_arch: Callable[..., Any]
    rule_add_array: Callable[..., Any]
    attr_set: Callable[..., Any]
    export_bpf: Callable[..., Any]
    version: Callable[..., Any]


def _load() -> _Lib:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as e:
        raise LibseccompMissing(e.errno or 0, f"cannot load libseccomp.so.2: {e}") from e

    def declare(
        name: str, argtypes: list[Any], restype: Any = ctypes.c_int, *, check: bool = True
    ) -> Any:
        func = getattr(lib, name)
        func.argtypes = argtypes
        func.restype = restype
        if check and restype is ctypes.c_int:
            func.errcheck = _errcheck
        return func

    ctx = ctypes.c_void_p
    return _Lib(
        init=declare("seccomp_init", [ctypes.c_uint32], ctypes.c_void_p),
        release=declare("seccomp_release", [ctx], None),
        arch_add=declare("seccomp_arch_add", [ctx, ctypes.c_uint32]),
        arch_resolve_name=declare("seccomp_arch_resolve_name", [ctypes.c_char_p], ctypes.c_uint32),
        # Not errchecked: a negative number is a pseudo-syscall (a name that
        # exists only on another architecture of the filter), -1 is unknown.
        resolve_name=declare("seccomp_syscall_resolve_name", [ctypes.c_char_p], check=False),
        resolve_name_arch=declare(
            "seccomp_syscall_resolve_name_arch", [ctypes.c_uint32, ctypes.c_char_p], check=False
        ),
        rule_add_array=declare(
            "seccomp_rule_add_array",
            [ctx, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(ArgCmp)],
        ),
        attr_set=declare("seccomp_attr_set", [ctx, ctypes.c_int, ctypes.c_uint32]),
        export_bpf=declare("seccomp_export_bpf", [ctx, ctypes.c_int]),
        version=declare("seccomp_version", [], ctypes.POINTER(_Version)),
    )


@functools.cache
def lib() -> _Lib:
    """The loaded library (LibseccompMissing if it is not installed)."""
    return _load()


def version() -> tuple[int, int, int]:
    """The loaded libseccomp's version (major, minor, micro)."""
    v = lib().version().contents
    return int(v.major), int(v.minor), int(v.micro)


def arch_token(name: str) -> int:
    """The AUDIT_ARCH token of a libseccomp architecture name (``x86_64``, ``x86``, ``x32``)."""
    token = int(lib().arch_resolve_name(name.encode()))
    if token == 0:
        raise ValueError(f"libseccomp does not know the architecture {name!r}")
    return token


def syscall_number(name: str, arch: str | None = None) -> int | None:
    """The number of syscall ``name`` on ``arch`` (native if None); None if unknown there.

    Negative numbers are libseccomp's pseudo-syscalls (e.g. ``socket`` on
    32-bit x86 is multiplexed through ``socketcall``): valid in rules.
    """
    raw = name.encode()
    if arch is None:
        nr = int(lib().resolve_name(raw))
    else:
        nr = int(lib().resolve_name_arch(arch_token(arch), raw))
    return None if nr == NR_SCMP_ERROR else nr


@dataclass(frozen=True)
class Condition:
    """One argument check of a rule: ``args[index] op value`` (MASKED_EQ: & value == value_two)."""

    index: int
    op: int  # CMP_*
    value: int
    value_two: int = 0


@dataclass(frozen=True)
class CompiledRule:
    syscall: int  # a native number or a pseudo-syscall
    action: int
    conditions: tuple[Condition, ...] = ()


def compile_bpf(default_action: int, arches: Sequence[str], rules: Sequence[CompiledRule]) -> bytes:
    """The classic BPF program (``struct sock_filter`` array) for a filter.

    ``arches`` are added next to the native one (which must be among them);
    other architectures get the default action.
    """
    L = lib()
    ctx = L.init(default_action)
    if not ctx:
        raise OSError(ctypes.get_errno(), "seccomp_init: failed")
    try:
        native = os.uname().machine
        for arch in arches:
            if arch != native:
                L.arch_add(ctx, arch_token(arch))
        L.attr_set(ctx, FLTATR_CTL_OPTIMIZE, 2)
        for rule in rules:
            conds = (ArgCmp * max(1, len(rule.conditions)))(
                *(ArgCmp(c.index, c.op, c.value, c.value_two) for c in rule.conditions)
            )
            L.rule_add_array(ctx, rule.action, rule.syscall, len(rule.conditions), conds)
        fd = os.memfd_create("repeatr-seccomp", os.MFD_CLOEXEC)
        try:
            L.export_bpf(ctx, fd)
            size = os.fstat(fd).st_size
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        L.release(ctx)
