"""Policies: the capability set a contained process keeps, and whether it is filtered.

A policy is a user-facing privilege level, independent of the uid the process
runs as (uid 0 under ``routine`` still cannot chown other users' files).
The sets are the original's (polydawn/repeatr ``executor/policy/capabilities.go``);
an empty or absent policy means ``routine``, as there.

``sysad`` is "all capabilities". The original listed every capability its
kernel headers knew (through ``CAP_AUDIT_READ``, 37); we list every one in
today's header (through ``CAP_CHECKPOINT_RESTORE``, 40). Executors must drop
numbers above the host's ``/proc/sys/kernel/cap_last_cap``.

``routine`` and ``governor`` jobs also run under the default seccomp profile
(``repeatr.executors.seccomp``, with their capabilities' conditional rules);
``sysad`` jobs run unfiltered, like Docker's ``--privileged``.
"""

from __future__ import annotations

from enum import StrEnum

from repeatr.errors import UsageError
from repeatr.linux import capability as _kernel
from repeatr.linux.capability import CAP_LAST_CAP

#: Capability numbers, from <linux/capability.h>: one table, kept with the kernel calls.
CAPABILITY_NUMBERS: dict[str, int] = _kernel.CAPABILITIES



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


#: Does the job get the default seccomp profile? ``sysad`` is Docker's
#: ``--privileged``: every capability and no filter.
SECCOMP: dict[Policy, bool] = {
    Policy.ROUTINE: True,
    Policy.GOVERNOR: True,
    Policy.SYSAD: False,
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


def seccomp(policy: Policy) -> bool:
    """Whether jobs under ``policy`` run under the default seccomp profile."""
    return SECCOMP[policy]


def capability_numbers(policy: Policy, last_cap: int = CAP_LAST_CAP) -> tuple[int, ...]:
    """Capability numbers kept under ``policy``, sorted, limited to ``last_cap``.

    Pass the host's ``/proc/sys/kernel/cap_last_cap`` so an older kernel is
    never asked for a capability it does not know.
    """
    numbers = (CAPABILITY_NUMBERS[name] for name in CAPABILITIES[policy])
    return tuple(sorted(n for n in numbers if n <= last_cap))
