"""Who owns a resource: a process named so that a reused pid is not mistaken for it.

repeatr is daemonless: processes coordinate through files (lock records,
temp dirs in the cache, run work dirs, IP leases). Each such file names its
owner, and a later process decides from that name alone whether the owner
may still be working. A bare pid is not enough: pids are reused, so an old
record could name a pid that now belongs to an unrelated process. An
``Owner`` is therefore

- ``pid``,
- ``start``: the process start time in clock ticks since boot
  (``/proc/<pid>/stat`` field 22), which differs between two processes that
  share a pid,
- ``boot``: the kernel's boot ID (``/proc/sys/kernel/random/boot_id``,
  dashes removed), because start times restart at every boot,
- ``host``: the hostname, so records on a shared filesystem are not judged
  by the wrong machine.

Text form (safe in file names, parsed by :meth:`Owner.parse`)::

    <pid>-<start>-<boot>@<host>

Limits: a process in another pid namespace is seen by its pid in that
namespace, so records must be written and judged from the same (host) pid
namespace. An owner on another host cannot be checked and counts as alive
(never reclaim what might be in use).
"""

from __future__ import annotations

import functools
import os
import time

import msgspec

from repeatr.errors import UsageError


@functools.cache
def boot_id() -> str:
    """This boot's ID, without dashes (constant until the next reboot)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


def hostname() -> str:
    return os.uname().nodename  # gethostname(2) is uname(2)'s nodename on Linux


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'.
    rest = raw[raw.rindex(b")") + 2 :].split()
    # rest[0] is field 3 (state), so field 22 (starttime) is rest[19].
    return int(rest[19])


@functools.cache
def _boot_time() -> float:
    """Wall-clock time of boot (``btime`` in /proc/stat)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


class Owner(msgspec.Struct, frozen=True):
    pid: int
    start: int
    boot: str
    host: str

    @classmethod
    def current(cls) -> Owner:
        """The calling process (computed each time: a forked child is a new owner)."""
        pid = os.getpid()
        start = start_ticks(pid)
        assert start is not None, "/proc/self/stat must exist"
        return cls(pid, start, boot_id(), hostname())

    @classmethod
    def of_pid(cls, pid: int) -> Owner | None:
        """The live process ``pid`` on this host, or None if it does not exist."""
        start = start_ticks(pid)
        return None if start is None else cls(pid, start, boot_id(), hostname())

    @classmethod
    def parse(cls, text: str) -> Owner:
        """Inverse of ``str()``; raises UsageError on anything else."""
        ident, sep, host = text.strip().partition("@")
        parts = ident.split("-")
        if not sep or not host or len(parts) != 3:
            raise UsageError(f"invalid owner record {text!r}: expected <pid>-<start>-<boot>@<host>")
        try:
            pid, start = int(parts[0]), int(parts[1])
        except ValueError:
            raise UsageError(
                f"invalid owner record {text!r}: pid and start must be numbers"
            ) from None
        return cls(pid, start, parts[2], host)

    @classmethod
    def try_parse(cls, text: str) -> Owner | None:
        try:
            return cls.parse(text)
        except UsageError:
            return None

    def __str__(self) -> str:
        return f"{self.pid}-{self.start}-{self.boot}@{self.host}"

    @property
    def is_local(self) -> bool:
        """Recorded on this host (in any boot)."""
        return self.host == hostname()

    def is_alive(self) -> bool:
        """True unless this owner has certainly gone.

        Dead: same host and either an earlier boot, no such pid, or a pid
        whose start time differs (the pid was reused). An owner on another
        host cannot be checked and counts as alive.
        """
        if not self.is_local:
            return True
        if self.boot != boot_id():
            return False
        return start_ticks(self.pid) == self.start

    def started_at(self) -> float | None:
        """Wall-clock start time, when it can be known (same host and boot)."""
        if not self.is_local or self.boot != boot_id():
            return None
        return _boot_time() + self.start / os.sysconf("SC_CLK_TCK")

    def describe(self) -> str:
        """For messages: ``pid 123 (`repeatr run f.json`, started 12:00:03)``."""
        if not self.is_local:
            return f"pid {self.pid} on host {self.host}"
        if not self.is_alive():
            return f"pid {self.pid} (no longer running)"
        details = []
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            if argv:
                details.append("`" + " ".join(argv)[:120] + "`")
        except OSError:
            pass
        started = self.started_at()
        if started is not None:
            details.append("started " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)))
        return f"pid {self.pid}" + (f" ({', '.join(details)})" if details else "")
