"""Our cgroups: one per limited run, v1 controllers, cleaned up even after a crash.

Layout: ``/sys/fs/cgroup/<controller>/repeatr-<owner pid>-<hex>`` for each
controller a run's limits need (``memory``, ``pids``, ``cpu``). Flat, not
``repeatr/<run>``: a shared parent dir would have to be removed when the last
run ends, racing with the next run (ours, or runc's MkdirAll) creating a dir
in it. The OCI runtimes get the same kind of name as their ``cgroupsPath``
(runc and crun create one in every hierarchy, the v2 one too, and remove it
at ``delete``); since it is flat, runc's habit of leaving the *parent* of
``cgroupsPath`` behind leaves nothing.

``owner pid`` is the repeatr process that started the run. ``gc()`` removes
the groups of owners that are gone (killing what is still in them): a run
whose repeatr was SIGKILLed is cleaned up by the next one.

This host has hybrid cgroups: v1 controllers, plus a v2 hierarchy at
``/sys/fs/cgroup/unified`` without them. Only v1 controllers are used here;
on a pure v2 host the limits are not available (``controllers()`` says so).

Import-light (``os`` only): the sandbox helper uses it.
"""

from __future__ import annotations

import errno
import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

ROOT = "/sys/fs/cgroup"
PREFIX = "repeatr-"
CPU_PERIOD_US = 100_000
# limit name -> v1 controller
CONTROLLER_FOR = {"memory": "memory", "pids": "pids", "cpu": "cpu"}


def layout() -> str:
    """``v1``, ``hybrid`` (v1 plus a v2 mount at unified), ``v2`` or ``none``."""
    try:
        with open("/proc/self/mountinfo") as f:
            types = {line.split(" - ")[1].split()[0] for line in f if "/sys/fs/cgroup" in line}
    except OSError:
        return "none"
    if "cgroup" in types:
        return "hybrid" if "cgroup2" in types else "v1"
    return "v2" if "cgroup2" in types else "none"


def controllers() -> frozenset[str]:
    """v1 controllers mounted at ``/sys/fs/cgroup/<name>`` and writable by us."""
    found = set()
    for name in set(CONTROLLER_FOR.values()):
        path = os.path.join(ROOT, name)
        if os.path.exists(os.path.join(path, "cgroup.procs")) and os.access(path, os.W_OK):
            found.add(name)
    return frozenset(found)


def new_name(owner: int) -> str:
    return f"{PREFIX}{owner}-{os.urandom(5).hex()}"


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


class Group:
    """One run's cgroup, across the controllers its limits need."""

    def __init__(self, name: str, ctrls: Iterable[str]) -> None:
        self.name = name
        self.dirs = [os.path.join(ROOT, c, name) for c in sorted(set(ctrls))]

    @classmethod
    def create(cls, name: str, limits: dict[str, int | float]) -> Group:
        """mkdir and set ``limits`` (memory bytes, pids, cpu cores); OSError on failure."""
        group = cls(name, [CONTROLLER_FOR[k] for k in limits if k in CONTROLLER_FOR])
        try:
            for d in group.dirs:
                os.mkdir(d, 0o755)
            if "memory" in limits:
                mem = os.path.join(ROOT, "memory", name)
                _write(os.path.join(mem, "memory.limit_in_bytes"), str(int(limits["memory"])))
                memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
                if os.path.exists(memsw):  # no swapping around the limit
                    _write(memsw, str(int(limits["memory"])))
            if "pids" in limits:
                _write(os.path.join(ROOT, "pids", name, "pids.max"), str(int(limits["pids"])))
            if "cpu" in limits:
                cpu = os.path.join(ROOT, "cpu", name)
                _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                quota = max(1000, round(float(limits["cpu"]) * CPU_PERIOD_US))
                _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(quota))
        except OSError:
            group.remove()
            raise
        return group

    def join(self) -> None:
        """Move the calling process into every controller's group."""
        for d in self.dirs:
            _write(os.path.join(d, "cgroup.procs"), "0")

    def oom_kills(self) -> int:
        return oom_kills(self.name)

    def remove(self) -> None:
        for d in self.dirs:
            remove_dir(d)


def oom_kills(name: str) -> int:
    """How many processes the kernel OOM-killed in memory group ``name`` (0 if none/absent)."""
    try:
        text = _read(os.path.join(ROOT, "memory", name, "memory.oom_control"))
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def _procs(path: str) -> list[int]:
    try:
        return [int(x) for x in _read(os.path.join(path, "cgroup.procs")).split()]
    except OSError:
        return []


def remove_dir(path: str, attempts: int = 50) -> None:
    """rmdir a cgroup dir (children first), SIGKILLing what is left in it."""
    try:
        subs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for sub in subs:
        remove_dir(sub, attempts)
    for _ in range(attempts):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                raise
        for pid in _procs(path):
            try:  # noqa: SIM105 (contextlib: the helper's start-up time)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)  # the kernel releases the group after the exits
    os.rmdir(path)


def ours() -> list[str]:
    """Every ``repeatr-*`` dir at the top of every hierarchy (the v2 one too)."""
    found: list[str] = []
    try:
        hierarchies = sorted(os.listdir(ROOT))
    except OSError:
        return []
    for h in hierarchies:
        base = os.path.join(ROOT, h)
        try:
            found.extend(
                os.path.join(base, n) for n in sorted(os.listdir(base)) if n.startswith(PREFIX)
            )
        except OSError:
            continue
    return found


def _owner(path: str) -> int | None:
    rest = os.path.basename(path)[len(PREFIX) :]
    owner, _, _ = rest.partition("-")
    return int(owner) if owner.isdigit() else None


def gc() -> list[str]:
    """Remove the groups of runs whose repeatr process is gone; the removed paths."""
    removed: list[str] = []
    for path in ours():
        owner = _owner(path)
        if owner is None or os.path.exists(f"/proc/{owner}"):
            continue
        try:
            remove_dir(path)
        except OSError:
            continue
        removed.append(path)
    return removed
