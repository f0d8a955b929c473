"""The default seccomp profile: one profile, for every executor that applies one.

Docker's default profile (moby ``profiles/seccomp/default.json``) is the
reference; this is the same policy in our own structure, with the
differences listed below. What is not allowed fails with ``EPERM``.

- An allowlist of ordinary syscalls (files, memory, signals, sockets, time,
  SysV/POSIX IPC, ptrace of the job's own processes: seccomp cannot be
  bypassed through ptrace since Linux 4.8, so as in Docker it is allowed from
  that kernel on; every executor that applies the profile also gives the job
  its own pid namespace, so there is nothing else to trace).
- Conditional rules: a syscall that only a capability makes useful is allowed
  only when the job has that capability (``chroot`` with CAP_SYS_CHROOT, which
  ``governor`` keeps; ``mount``, ``unshare``, ``setns``, ``bpf``... with
  CAP_SYS_ADMIN, which no policy but ``sysad`` has).
- ``clone`` without namespace flags, ``clone3`` fails with ENOSYS (its flags
  are in memory, out of a filter's reach) so libcs fall back to ``clone``;
  ``personality`` only with Docker's harmless values; ``socket`` of any
  family but AF_VSOCK.
- Denied among others: ``unshare``/``setns``/``mount``/``umount2``/
  ``pivot_root`` and the new mount API, ``keyctl``/``add_key``/
  ``request_key`` (the kernel keyring is not namespaced), ``bpf``,
  ``perf_event_open``, ``userfaultfd``, ``kexec_*``, ``init_module``,
  ``open_by_handle_at`` (the "shocker" escape), ``acct``, ``swapon``,
  ``reboot``, ``settimeofday``, ``iopl``/``ioperm``.

Differences from Docker's profile (the 2023 one): ``io_uring_*`` are denied
(as in Docker 25: a large, repeatedly exploited kernel surface that also
bypasses this filter for the operations it queues); the syscalls added since
(``fchmodat2``, ``cachestat``, ``map_shadow_stack``, ``futex_wake``/
``futex_wait``/``futex_requeue``) are allowed. Syscalls that this host's
libseccomp does not know are skipped (runc does the same). As runc does,
syscalls numbered above the newest one the profile names (per ABI) fail with
ENOSYS, not EPERM: they are newer than the profile, and a libc falls back to
an older call on ENOSYS only.

Architectures: x86_64 with its 32-bit (``x86``) and ``x32`` ABIs, aarch64 with
``arm``, as Docker's ``archMap``. Any other architecture gets the default
action.

Policies (``repeatr.model.policy``): ``routine`` and ``governor`` get the
profile, with their capabilities' conditional rules; ``sysad`` (every
capability: Docker's ``--privileged``) gets none.

Rendered twice from the same rules: as OCI ``linux.seccomp`` for runc, crun
and runsc (``oci``), and as a BPF program compiled here with libseccomp for
the ``ns`` and ``chroot`` executors (``bpf``), which the sandbox helper
installs in the job right before ``execve``.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from repeatr.hashes import sha256
from repeatr.linux import capability, libseccomp

#: Changes whenever the rules change (shown by ``--debug``, part of the cache key).
PROFILE = "repeatr-default/1"

#: Bump when ``compile_bpf`` makes a different program from the same rules (cache key).
PROGRAM_FORMAT = 2
#: Compiled programs (root's tmpfs: emptied at boot).
CACHE_DIR = Path("/run/repeatr/seccomp")

#: Per native architecture (``uname -m``), the ABIs a filter covers (libseccomp names).
ARCHITECTURES: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86_64", "x86", "x32"),
    "aarch64": ("aarch64", "arm"),
}
_OCI_ARCH = {
    "x86_64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32",
    "aarch64": "SCMP_ARCH_AARCH64", "arm": "SCMP_ARCH_ARM",
}
_OCI_OP = {
    libseccomp.CMP_NE: "SCMP_CMP_NE", libseccomp.CMP_EQ: "SCMP_CMP_EQ",
    libseccomp.CMP_MASKED_EQ: "SCMP_CMP_MASKED_EQ",
}

# linux/sched.h: every CLONE_NEW* flag (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET)
CLONE_NAMESPACE_FLAGS = 0x7E020000
AF_VSOCK = 40  # linux/socket.h
# linux/personality.h: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)


class Rule(msgspec.Struct, frozen=True):
    """Syscalls and what happens to them, under conditions.

    ``errno`` None allows the call, else it fails with that errno. ``args``
    must all hold (one rule per alternative). ``with_cap``: only when the
    job has that capability; ``without_cap``: only when it lacks it.
    """

    names: tuple[str, ...]
    errno: int | None = None
    args: tuple[libseccomp.Condition, ...] = ()
    with_cap: str | None = None
    without_cap: str | None = None
    arches: tuple[str, ...] = ()  # only on these ABIs (libseccomp names); () for all
    min_kernel: tuple[int, int] | None = None

    def applies(self, caps: frozenset[str], kernel: tuple[int, int]) -> bool:
        if self.with_cap is not None and self.with_cap not in caps:
            return False
        if self.without_cap is not None and self.without_cap in caps:
            return False
        return self.min_kernel is None or kernel >= self.min_kernel


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _arg(index: int, op: int, value: int, value_two: int = 0) -> tuple[libseccomp.Condition]:
    return (libseccomp.Condition(index, op, value, value_two),)


ALLOWED = _names("""
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
    chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
    clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
    exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
    fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
    flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
    fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
    futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32
    getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid
    getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
    get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
    gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1
    inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
    io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
    landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat
    mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap msgctl msgget
    msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep newfstatat
    _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc
    pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2 prlimit64
    process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
    readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
    removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
    rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
    sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
    setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
    setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
    setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
    sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statx
    symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
    tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime utimensat
    utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""")

_SYS_ADMIN = _names("""
    bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
    mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname
    sethostname setns syslog umount umount2 unshare
""")

RULES: tuple[Rule, ...] = (
    Rule(ALLOWED),
    Rule(_names("process_vm_readv process_vm_writev ptrace"), min_kernel=(4, 8)),
    Rule(("socket",), args=_arg(0, libseccomp.CMP_NE, AF_VSOCK)),
    *(Rule(("personality",), args=_arg(0, libseccomp.CMP_EQ, p)) for p in PERSONALITIES),
    Rule(("arch_prctl",), arches=("x86_64", "x32")),
    Rule(("modify_ldt",), arches=("x86_64", "x32", "x86")),
    Rule(
        _names("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush"),
        arches=("aarch64", "arm"),
    ),
    Rule(("set_tls",), arches=("aarch64", "arm")),
    Rule(("open_by_handle_at",), with_cap="CAP_DAC_READ_SEARCH"),
    Rule(_SYS_ADMIN, with_cap="CAP_SYS_ADMIN"),
    Rule(("clone",), args=_arg(0, libseccomp.CMP_MASKED_EQ, CLONE_NAMESPACE_FLAGS),
         without_cap="CAP_SYS_ADMIN"),
    Rule(("clone3",), errno=errno.ENOSYS, without_cap="CAP_SYS_ADMIN"),
    Rule(("reboot",), with_cap="CAP_SYS_BOOT"),
    Rule(("chroot",), with_cap="CAP_SYS_CHROOT"),
    Rule(_names("delete_module init_module finit_module"), with_cap="CAP_SYS_MODULE"),
    Rule(("acct",), with_cap="CAP_SYS_PACCT"),
    Rule(_names("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace"),
         with_cap="CAP_SYS_PTRACE"),
    Rule(_names("iopl ioperm"), with_cap="CAP_SYS_RAWIO"),
    Rule(_names("settimeofday stime clock_settime clock_settime64"), with_cap="CAP_SYS_TIME"),
    Rule(("vhangup",), with_cap="CAP_SYS_TTY_CONFIG"),
    Rule(_names("get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
         with_cap="CAP_SYS_NICE"),
    Rule(("syslog",), with_cap="CAP_SYSLOG"),
    Rule(("bpf",), with_cap="CAP_BPF"),
    Rule(("perf_event_open",), with_cap="CAP_PERFMON"),
)

DEFAULT_ERRNO = errno.EPERM


class Profile(msgspec.Struct, frozen=True):
    """The profile for one capability set on one kernel and architecture."""

    arches: tuple[str, ...]
    rules: tuple[Rule, ...]
    capabilities: frozenset[str]  # the job's, as CAP_* names

    def describe(self) -> str:
        """One line for ``--debug`` and ``repeatr explain``."""
        gated = sorted({r.with_cap for r in self.rules if r.with_cap is not None})
        extra = f", plus the rules of {', '.join(gated)}" if gated else ""
        return f"seccomp: {PROFILE} ({'/'.join(self.arches)}; default EPERM{extra})"

    def oci(self) -> dict[str, Any]:
        """The OCI ``linux.seccomp`` object (runc, crun; runsc with ``--oci-seccomp``)."""
        syscalls: list[dict[str, Any]] = []
        for rule in self.rules:
            entry: dict[str, Any] = {"names": list(rule.names)}
            if rule.errno is None:
                entry["action"] = "SCMP_ACT_ALLOW"
            else:
                entry["action"] = "SCMP_ACT_ERRNO"
                entry["errnoRet"] = rule.errno
            if rule.args:
                entry["args"] = [
                    {"index": c.index, "value": c.value, "valueTwo": c.value_two,
                     "op": _OCI_OP[c.op]}
                    for c in rule.args
                ]
            syscalls.append(entry)
        return {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": DEFAULT_ERRNO,
            "architectures": [_OCI_ARCH[a] for a in self.arches],
            "syscalls": syscalls,
        }

    def bpf(self, cache_dir: Path | None = CACHE_DIR) -> bytes:
        """The BPF program the sandbox helper installs.

        Compiling costs ~25 ms (three ABIs), more than a whole ``ns`` run, so
        programs are kept in ``cache_dir`` (a tmpfs: emptied at boot, so never
        stale across kernel or library upgrades) and in memory.
        """
        return _cached_bpf(self, cache_dir)


def _cap_names(caps: Iterable[str]) -> frozenset[str]:
    by_number = {n: name for name, n in capability.CAPABILITIES.items()}
    numbers = capability.cap_numbers(caps, last_cap=capability.running_last_cap())
    return frozenset(by_number[n] for n in numbers if n in by_number)


def _kernel() -> tuple[int, int]:
    release = os.uname().release.split(".")
    try:
        return int(release[0]), int(release[1].split("-")[0])
    except (IndexError, ValueError):
        return (0, 0)


def for_capabilities(caps: Iterable[str], *, machine: str | None = None) -> Profile:
    """The profile for a job with capabilities ``caps`` (``CAP_*``, short names or ``ALL``)."""
    machine = machine or os.uname().machine
    arches = ARCHITECTURES.get(machine, (machine,))
    names = _cap_names(caps)
    kernel = _kernel()
    rules = tuple(
        r for r in RULES
        if r.applies(names, kernel) and (not r.arches or set(r.arches) & set(arches))
    )
    return Profile(arches, rules, names)


def cache_key(profile: Profile) -> str:
    """What the compiled program depends on: the rules, the ABIs, how we compile, libseccomp."""
    # No sets in it: their repr's order changes with each process's hash seed.
    ident = repr((
        PROFILE, PROGRAM_FORMAT, profile.arches, profile.rules, sorted(profile.capabilities),
        libseccomp.version(),
    ))
    return sha256(ident.encode()).hexdigest()[:32]


def _trusted(cache_dir: Path) -> bool:
    """Only we may have written it: ours, writable by nobody else (a program there is obeyed)."""
    st = cache_dir.stat()
    return st.st_uid == os.geteuid() and not st.st_mode & 0o022


@functools.cache
def _cached_bpf(profile: Profile, cache_dir: Path | None) -> bytes:
    if cache_dir is None:
        return compile_bpf(profile)
    path = cache_dir / f"{cache_key(profile)}.bpf"
    try:
        program = path.read_bytes() if _trusted(cache_dir) else b""
        if program and len(program) % 8 == 0:
            return program
    except OSError:
        pass
    program = compile_bpf(profile)
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _trusted(cache_dir):
            return program
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(program)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only /run: compile again next time
    return program


def compile_bpf(profile: Profile) -> bytes:
    """Compile ``profile`` with libseccomp (no cache)."""
    rules: list[libseccomp.CompiledRule] = []
    newest: dict[str, int] = {}
    for rule in profile.rules:
        for arch in rule.arches or profile.arches:
            if arch not in profile.arches:
                continue
            for name in rule.names:
                nr = libseccomp.syscall_number(name, arch)
                if nr is None or nr < 0:
                    continue
                if arch == "x32":
                    nr &= ~libseccomp.X32_SYSCALL_BIT
                    if nr >= 512:  # x32's own compat entries
                        continue
                newest[arch] = max(newest.get(arch, 0), nr)
    for rule in profile.rules:
        action = (
            libseccomp.ACT_ALLOW if rule.errno is None else libseccomp.act_errno(rule.errno)
        )
        for name in rule.names:
            nr = libseccomp.syscall_number(name)
            if nr is None:
                continue  # not a syscall libseccomp knows (runc skips them too)
            rules.append(libseccomp.CompiledRule(nr, action, rule.args))
    return libseccomp.compile_bpf(
        libseccomp.act_errno(DEFAULT_ERRNO), profile.arches, rules, newest=newest
    )
