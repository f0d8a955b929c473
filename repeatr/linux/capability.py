"""Capability names and numbers, from ``linux/capability.h`` (kernel 6.x).

Names are accepted with or without the ``CAP_`` prefix, in any case.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

# /usr/include/linux/capability.h
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
CAP_LAST_CAP = 40  # linux/capability.h; the running kernel's: /proc/sys/kernel/cap_last_cap
ALL = "ALL"  # pseudo-name: every capability the kernel knows


def cap_number(name: str) -> int:
    """The number of capability ``name`` (``"kill"``, ``"CAP_KILL"``); KeyError if unknown."""
    key = name.upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    return CAPABILITIES[key]


def cap_numbers(names: Iterable[str], *, last_cap: int = CAP_LAST_CAP) -> frozenset[int]:
    """Numbers for ``names``; the pseudo-name ``ALL`` means 0..last_cap."""
    out: set[int] = set()
    for name in names:
        if name.upper() == ALL:
            out.update(range(last_cap + 1))
        else:
            out.add(cap_number(name))
    return frozenset(out)


def bounding_set() -> frozenset[int]:
    """The capabilities this process may hand on (its bounding set, ``CapBnd``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return frozenset(c for c in range(64) if mask >> c & 1)
    except (OSError, ValueError):
        pass
    return frozenset()


def grantable(names: Iterable[str], *, last_cap: int) -> frozenset[int]:
    """The numbers a job asking for ``names`` gets, on every executor.

    ``ALL`` is every capability up to ``last_cap`` (the job's kernel's last)
    that repeatr itself may hand on: a job never gets a capability outside
    repeatr's own bounding set, whether its kernel is the host's or a guest's
    (a host that drops CAP_SYS_RESOURCE from repeatr's bounding set drops it
    from every job's, in a VM too).
    """
    return cap_numbers(names, last_cap=last_cap) & bounding_set()


_running_last_cap: list[int] = []


def running_last_cap() -> int:
    """The highest capability number the running kernel knows (read once a process:
    the sandbox server reads it before it forks, so its helpers need not)."""
    if not _running_last_cap:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _running_last_cap.append(int(f.read()))
        except (OSError, ValueError):
            _running_last_cap.append(CAP_LAST_CAP)
    return _running_last_cap[0]
