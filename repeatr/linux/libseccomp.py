"""libseccomp through ctypes: compile a seccomp filter to classic BPF bytes.

Only the parent uses it (``repeatr.executors.seccomp``): the sandbox helper
stays import-light, and the job installs the finished bytes last before
``execve`` (``repeatr/linux/_jobstart.c``). The library is Debian's
``libseccomp2`` (``libseccomp.so.2``); runc is built against the same one, so
both resolve syscall names the same way.

Every function here returns a negative errno on failure (``seccomp_init``:
NULL); the errcheck turns that into ``OSError`` naming the call.
Constants cite ``/usr/include/seccomp.h`` (libseccomp-dev 2.5).

ctypes is imported, and the library loaded through it, only when a program
is compiled (:func:`lib`): every run imports this module (for the constants
and :class:`Condition`) and asks for :func:`version` (the compiled-program
cache's key, ``repeatr.executors.seccomp``), which the compiled ``_libc``
answers; ``import ctypes`` would cost each run ~5 ms of CPU (``python -S -c``;
``repeatr.linux.libc``), and a cache miss costs ~25 ms anyway.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

from repeatr.linux import _libc

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


class LibseccompMissing(OSError):
    """libseccomp.so.2 cannot be loaded."""


def _errcheck(result: Any, func: Any, args: tuple[Any, ...]) -> Any:
    if isinstance(result, int) and result < 0:
        shown = ", ".join(str(a) for a in args[1:])  # args[0] is the context pointer
        raise OSError(-result, f"{func.__name__}({shown}): {os.strerror(-result)}")
    return result


class _Lib(msgspec.Struct, frozen=True):
    arg_cmp: Any  # struct scmp_arg_cmp, a ctypes.Structure
    get_errno: Callable[[], int]
    init: Callable[..., Any]
    release: Callable[..., Any]
    arch_add: Callable[..., Any]
    arch_resolve_name: Callable[..., Any]
    resolve_name: Callable[..., Any]
    resolve_name_arch: Callable[..., Any]
    rule_add_array: Callable[..., Any]
    attr_set: Callable[..., Any]
    export_bpf: Callable[..., Any]


def _load() -> _Lib:
    import ctypes  # here, not at the top: see the module's docstring

    class ArgCmp(ctypes.Structure):
        """struct scmp_arg_cmp: ``arg`` compared with ``op`` (MASKED_EQ: arg & a == b)."""

        _fields_ = [
            ("arg", ctypes.c_uint),
            ("op", ctypes.c_int),
            ("datum_a", ctypes.c_uint64),
            ("datum_b", ctypes.c_uint64),
        ]

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
        arg_cmp=ArgCmp,
        get_errno=ctypes.get_errno,
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
    )


@functools.cache
def lib() -> _Lib:
    """The loaded library (LibseccompMissing if it is not installed)."""
    return _load()


def version() -> tuple[int, int, int]:
    """libseccomp's version (major, minor, micro), asked without ctypes (LibseccompMissing
    if it is not installed)."""
    v = _libc.seccomp_version()
    if isinstance(v, str):
        raise LibseccompMissing(0, f"cannot load libseccomp.so.2: {v}")
    return v


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


class Condition(msgspec.Struct, frozen=True):
    """One argument check of a rule: ``args[index] op value`` (MASKED_EQ: & value == value_two)."""

    index: int
    op: int  # CMP_*
    value: int
    value_two: int = 0


class CompiledRule(msgspec.Struct, frozen=True):
    syscall: int  # a native number or a pseudo-syscall
    action: int
    conditions: tuple[Condition, ...] = ()


# linux/filter.h, linux/bpf_common.h: classic BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGT_K = 0x25
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_INSN = struct.Struct("=HBBI")  # struct sock_filter
# linux/seccomp.h: struct seccomp_data offsets; asm/unistd_x32.h
_NR_OFFSET = 0
_ARCH_OFFSET = 4
X32_SYSCALL_BIT = 0x40000000
_X32_COMPAT_FIRST = 512  # x32's own compat entries (512..547), above every common number


def enosys_stub(newest: Mapping[str, int]) -> bytes:
    """BPF that fails syscalls newer than ``newest[abi]`` with ENOSYS, else falls through.

    As runc does: a syscall the profile cannot know (added to the kernel
    after it) fails as if the kernel lacked it, so libcs fall back to an
    older call instead of failing with EPERM. ``newest`` maps ABI names
    (``x86_64``, ``x86``, ``x32``...) to the highest syscall number the
    profile names there (x32: without its bit, below its compat range).
    Prepended to a libseccomp program, which starts by loading the arch again.
    """
    # (label, code, jump-if-true label, jump-if-false label, k); a None
    # jump goes to the next instruction, "end" to the libseccomp program.
    prog: list[tuple[str | None, int, str | None, str | None, int]] = [
        (None, _LD_W_ABS, None, None, _ARCH_OFFSET),
    ]
    abis = [abi for abi in newest if abi != "x32"]
    for i, abi in enumerate(abis):
        other_arch = f"arch{i + 1}" if i + 1 < len(abis) else "end"
        prog += [
            (f"arch{i}", _JEQ_K, None, other_arch, arch_token(abi)),
            (None, _LD_W_ABS, None, None, _NR_OFFSET),
        ]
        if abi == "x86_64" and "x32" in newest:  # x32 shares the arch, with a bit in nr
            prog += [
                (None, _JSET_K, "x32", None, X32_SYSCALL_BIT),
                (None, _JGT_K, "enosys", "end", newest[abi]),
                ("x32", _JGE_K, "end", None, X32_SYSCALL_BIT | _X32_COMPAT_FIRST),
                (None, _JGT_K, "enosys", "end", X32_SYSCALL_BIT | newest["x32"]),
            ]
        else:
            prog.append((None, _JGT_K, "enosys", "end", newest[abi]))
    prog.append(("enosys", _RET_K, None, None, act_errno(errno.ENOSYS)))
    at = {label: i for i, (label, *_) in enumerate(prog) if label is not None}
    at["end"] = len(prog)
    out = bytearray()
    for i, (_, code, jt, jf, k) in enumerate(prog):
        out += _INSN.pack(
            code, 0 if jt is None else at[jt] - i - 1, 0 if jf is None else at[jf] - i - 1, k
        )
    return bytes(out)


def compile_bpf(
    default_action: int,
    arches: Sequence[str],
    rules: Sequence[CompiledRule],
    *,
    newest: Mapping[str, int] | None = None,
) -> bytes:
    """The classic BPF program (``struct sock_filter`` array) for a filter.

    ``arches`` are added next to the native one (which must be among them);
    other architectures get the default action. With ``newest``, syscalls
    above those numbers fail with ENOSYS (``enosys_stub``).
    """
    L = lib()
    ctx = L.init(default_action)
    if not ctx:
        raise OSError(L.get_errno(), "seccomp_init: failed")
    try:
        native = os.uname().machine
        for arch in arches:
            if arch != native:
                L.arch_add(ctx, arch_token(arch))
        L.attr_set(ctx, FLTATR_CTL_OPTIMIZE, 2)
        for rule in rules:
            conds = (L.arg_cmp * max(1, len(rule.conditions)))(
                *(L.arg_cmp(c.index, c.op, c.value, c.value_two) for c in rule.conditions)
            )
            L.rule_add_array(ctx, rule.action, rule.syscall, len(rule.conditions), conds)
        fd = os.memfd_create("repeatr-seccomp", os.MFD_CLOEXEC)
        try:
            L.export_bpf(ctx, fd)
            size = os.fstat(fd).st_size
            program = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        if not newest:
            return program
        if program[: _INSN.size] != _INSN.pack(_LD_W_ABS, 0, 0, _ARCH_OFFSET):
            raise OSError(errno.EINVAL, "seccomp_export_bpf: program does not start with the arch")
        return enosys_stub(newest) + program
    finally:
        L.release(ctx)
