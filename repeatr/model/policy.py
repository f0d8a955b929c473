"""Policies: the capability set a contained process keeps.

A policy is a user-facing privilege level, independent of the uid the process
runs as (uid 0 under ``routine`` still cannot chown other users' files).
The sets are the original's (polydawn/repeatr ``executor/policy/capabilities.go``);
an empty or absent policy means ``routine``, as there.

``sysad`` is "all capabilities". The original listed every capability its
kernel headers knew (through ``CAP_AUDIT_READ``, 37); we list every one in
today's header (through ``CAP_CHECKPOINT_RESTORE``, 40). Executors must drop
numbers above the host's ``/proc/sys/kernel/cap_last_cap``.
"""

from __future__ import annotations

from enum import StrEnum

from repeatr.errors import UsageError

#: Capability numbers, from <linux/capability.h> (``#define CAP_* N``).
CAPABILITY_NUMBERS: dict[str, int] = {
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

#: ``CAP_LAST_CAP`` in the header this table was taken from.
CAP_LAST_CAP = 40


class Policy(StrEnum):
    ROUTINE = "routine"
    GOVERNOR = "governor"
    SYSAD = "sysad"


DEFAULT_POLICY = Policy.ROUTINE

_ROUTINE = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
_GOVERNOR = (
    *_ROUTINE,
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_SYS_CHROOT",
)
_SYSAD = tuple(CAPABILITY_NUMBERS)

CAPABILITIES: dict[Policy, tuple[str, ...]] = {
    Policy.ROUTINE: _ROUTINE,
    Policy.GOVERNOR: _GOVERNOR,
    Policy.SYSAD: _SYSAD,
}


def resolve(name: str) -> Policy:
    """The policy a formula's ``action.policy`` names; empty means ``routine``."""
    if not name:
        return DEFAULT_POLICY
    try:
        return Policy(name)
    except ValueError:
        known = ", ".join(p.value for p in Policy)
        raise UsageError(f"unknown policy {name!r} (known: {known})") from None


def capabilities(policy: Policy) -> tuple[str, ...]:
    """Capability names (``CAP_*``) kept under ``policy``."""
    return CAPABILITIES[policy]


def capability_numbers(policy: Policy, last_cap: int = CAP_LAST_CAP) -> tuple[int, ...]:
    """Capability numbers kept under ``policy``, sorted, limited to ``last_cap``.

    Pass the host's ``/proc/sys/kernel/cap_last_cap`` so an older kernel is
    never asked for a capability it does not know.
    """
    numbers = (CAPABILITY_NUMBERS[name] for name in CAPABILITIES[policy])
    return tuple(sorted(n for n in numbers if n <= last_cap))
