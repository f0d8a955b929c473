"""Order and check mount operations before anything is mounted.

Runs in the parent (so a bad plan fails before a helper starts) and again in
the helper (cheap, and the helper trusts no one). Rules:

- destinations are absolute, normalised container paths, each used once;
- the root (``/``) comes first; without one, an empty tmpfs root is used;
- parents before children (sort by path components);
- nothing is mounted under a host bind mount: it would create mount points
  in the host's tree; a cradle step at or under one is marked (``Mkdir.host``)
  so it leaves the host's directories alone;
- ``Proc`` is split out: the job itself mounts it, as PID 1 of its new pid
  namespace (ns, chroot), with its masks (``Proc.hardening``).
"""

from __future__ import annotations

from repeatr.assemble.ops import Bind, Mkdir, Op, Proc, Tmpfs
from repeatr.assemble.resolve import split
from repeatr.errors import AssemblyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class Plan:
    """The checked, ordered operations."""

    __slots__ = ("cradle", "late", "mounts")

    def __init__(
        self, mounts: tuple[Op, ...], late: tuple[Op, ...], cradle: tuple[Mkdir, ...]
    ) -> None:
        self.mounts = mounts  # executed by the helper, in order
        self.late = late  # Proc: executed by the process that will exec the job
        self.cradle = cradle  # after all mounts

    def describe(self) -> list[str]:
        return [op.describe() for op in (*self.mounts, *self.late, *self.cradle)]


def _under(path: tuple[str, ...], parent: tuple[str, ...]) -> bool:
    return len(path) > len(parent) and path[: len(parent)] == parent


def _mark_host(step: Mkdir, binds: list[tuple[str, ...]]) -> Mkdir:
    """``step`` with ``host`` set to the host bind at or above its path, if any."""
    path = tuple(split(step.path))
    for b in binds:
        if path == b or _under(path, b):
            host = "/" + "/".join(b)
            return Mkdir(step.path, step.mode, step.uid, step.gid, step.mtime, step.usable, host)
    return step


def plan(mounts: Iterable[Op], cradle: Iterable[Mkdir] = ()) -> Plan:
    """Sort and validate; AssemblyError naming the offending path."""
    ops = list(mounts)
    seen: dict[str, Op] = {}
    for op in ops:
        if isinstance(op, Mkdir):
            raise AssemblyError(f"{op.describe()}: a cradle step is not a mount")
        split(op.target)
        if op.target in seen:
            raise AssemblyError(
                f"two mounts on {op.target}: {seen[op.target].describe()} and {op.describe()}"
            )
        seen[op.target] = op
    if "/" not in seen:
        ops.append(Tmpfs("/", 0o755))
    ops.sort(key=lambda o: tuple(split(o.target)))
    binds = [tuple(split(o.target)) for o in ops if isinstance(o, Bind)]
    steps = [_mark_host(step, binds) for step in cradle]
    for op in ops:
        path = tuple(split(op.target))
        for b in binds:
            if _under(path, b):
                raise AssemblyError(
                    f"{op.describe()}: {op.target} is under the host bind mount "
                    f"/{'/'.join(b)}; nothing may be placed inside a host path",
                )
    procs = [tuple(split(o.target)) for o in ops if isinstance(o, Proc)]
    for op in ops:
        if any(_under(tuple(split(op.target)), p) for p in procs):
            raise AssemblyError(f"{op.describe()}: nothing may be mounted inside a proc mount")
    mounts_now = tuple(o for o in ops if not isinstance(o, Proc))
    late = tuple(o for o in ops if isinstance(o, Proc))
    return Plan(mounts_now, late, tuple(steps))
