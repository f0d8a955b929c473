"""Choosing an executor: the one asked for, or the best that can run this job here.

``auto`` walks a fixed preference order, best isolation per cost first:

1. ``ns``: every namespace, no external binary, ~10 ms;
2. ``crun``: the same isolation plus the runtime's device cgroup and masked
   /proc paths, ~15 ms more;
3. ``runc``: as crun, slower to start (~30 ms more than ns);
4. ``chroot``: shares the host's network and hostname (its own mount, pid
   and ipc namespaces): the last resort, and only for jobs that need nothing more.

``gvisor`` (a user-space kernel, ~130 ms more) is never picked by ``auto``
unless the job needs an application kernel (``Needs.user_space_kernel``); it
is always available by name. Nor is ``vm`` (a virtual machine per run: a
kernel of its own, ~2 s per run without hardware KVM): only by name.
An executor is skipped when its preflight fails (not installed, not
root...), or when it cannot give the job its network policy, hostname, or
enforce one of its limits. Every executor not chosen
gets one line saying why.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from repeatr.errors import ExecutorError
from repeatr.executors.base import Executor, ExecutorName, load
from repeatr.model.limits import LimitName

AUTO = "auto"
AUTO_ORDER = (ExecutorName.NS, ExecutorName.CRUN, ExecutorName.RUNC, ExecutorName.CHROOT)


class Needs(msgspec.Struct, frozen=True):
    """What a job asks of its executor."""

    network: str = "none"  # "none", "host" or "bridge"; "" for any
    limits: frozenset[LimitName] = msgspec.field(default_factory=frozenset)
    hostname: bool = False
    user_space_kernel: bool = False  # only an application kernel will do (gvisor)


def unfit(executor: Executor, needs: Needs) -> str | None:
    """Why ``executor`` cannot run a job with ``needs`` here, or None if it can."""
    try:
        executor.preflight()
    except ExecutorError as e:
        return f"unavailable: {e}"
    caps = executor.capabilities()
    # A bridge is a namespace repeatr.net prepares; the executor joins it, which
    # takes the same isolation as a namespace of its own ("none").
    wanted = "none" if needs.network == "bridge" else needs.network
    if needs.network and wanted not in caps.networks:
        return f"cannot give the job network {needs.network!r}"
    if needs.hostname and not caps.hostname:
        return "cannot set the hostname"
    if missing := sorted(needs.limits - caps.limits):
        return f"cannot enforce the limit(s) {', '.join(missing)}"
    if needs.user_space_kernel and not caps.user_space_kernel:
        return "the job needs a user-space kernel (gvisor)"
    return None


def choose(
    requested: str = AUTO,
    needs: Needs | None = None,
    *,
    make: Callable[[ExecutorName], Executor] | None = None,
) -> tuple[ExecutorName, list[str]]:
    """The executor to use and, for every other one, why it was not chosen.

    ``make`` builds an executor from its name (default: ``load(name)()``).
    Raises ExecutorError when the requested one (or, for ``auto``, every
    one) cannot run the job; the message carries the reasons.
    """
    needs = needs or Needs()
    build = make or (lambda n: load(n)())
    if requested != AUTO:
        name = ExecutorName(load(requested).name)  # validates the name
        if reason := unfit(build(name), needs):
            raise ExecutorError(f"executor {name} {reason}",
                                hint="repeatr doctor shows every executor; or use --executor auto")
        return name, [f"{name}: requested"]
    order = list(AUTO_ORDER)
    if needs.user_space_kernel:
        order.insert(0, ExecutorName.GVISOR)
    reasons: list[str] = []
    chosen: ExecutorName | None = None
    for name in order:
        if chosen is not None:
            reasons.append(f"{name}: not needed, {chosen} comes first (better isolation or faster)")
            continue
        reason = unfit(build(name), needs)
        if reason is None:
            chosen = name
        else:
            reasons.append(f"{name}: {reason}")
    if ExecutorName.GVISOR not in order:
        reasons.append(f"{ExecutorName.GVISOR}: only when asked for (--executor gvisor): "
                       "strongest isolation, but ~130 ms more per run")
    reasons.append(f"{ExecutorName.VM}: only when asked for (--executor vm): a kernel of "
                   "its own, but a boot per run (~2 s under software emulation)")
    if chosen is None:
        raise ExecutorError(
            "no executor can run this job here:\n  " + "\n  ".join(reasons),
            hint="repeatr doctor says how to make one available",
        )
    return chosen, reasons
