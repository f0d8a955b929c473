"""Resource limits: ``action.limits`` in a formula, and what executors enforce.

``{"memory": "64M" | bytes, "pids": int, "cpu": cores, "timeout": seconds,
"disk": "10G" | bytes}``, every field optional. ``memory`` and ``disk`` take
``repeatr.model.units.parse_size`` forms (binary multiples); ``cpu`` is a CPU
bandwidth in cores (``0.5`` = half of one CPU, enforced as a CFS quota per
100 ms period); ``timeout`` is wall clock seconds from the job's start, after
which the whole job is killed; ``disk`` is the size of the filesystem that
holds everything the job writes (its overlays' upper dirs), beyond which its
writes fail with ENOSPC (``repeatr.linux.scratch``).

Limits are part of the formula ID when present (a job limited to 64M is not
the same experiment as an unlimited one); ``repeatr.model.formula_id``
encodes them as a map of integers, only the fields set, in the order
``memory`` (bytes), ``pids``, ``cpu`` (millicores), ``timeout``
(milliseconds), ``disk`` (bytes): ``"64M"`` and ``67108864`` are the same
limit and hash the same. A formula without ``disk`` keeps its ID.

An executor that cannot enforce a limit a formula asks for refuses the run
(``Capabilities.limits`` lists what each one enforces).
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from repeatr.errors import UsageError
from repeatr.model.units import format_size, parse_size

MIN_MEMORY = 1 << 20  # below 1 MiB nothing starts; a typo, not a limit
MIN_DISK = 8 << 20  # the smallest ext4 worth making (a few hundred KiB go to metadata)
MAX_CPU_PERIOD_US = 100_000  # the CFS period the cpu limit is expressed in


class LimitName(StrEnum):
    MEMORY = "memory"
    PIDS = "pids"
    CPU = "cpu"
    TIMEOUT = "timeout"
    DISK = "disk"


class Limits(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True
):
    memory: int | str | None = None
    pids: int | None = None
    cpu: float | None = None
    timeout: float | None = None
    disk: int | str | None = None

    def disk_bytes(self) -> int | None:
        """``disk`` in bytes; UsageError when it is not a size."""
        if self.disk is None:
            return None
        if isinstance(self.disk, int):
            return self.disk
        return parse_size(self.disk, "limits.disk")

    def memory_bytes(self) -> int | None:
        """``memory`` in bytes; UsageError when it is not a size."""
        if self.memory is None:
            return None
        if isinstance(self.memory, int):
            return self.memory
        return parse_size(self.memory, "limits.memory")

    def names(self) -> frozenset[LimitName]:
        """The limits that are set."""
        return frozenset(n for n in LimitName if getattr(self, n.value) is not None)

    def cpu_millis(self) -> int | None:
        return None if self.cpu is None else round(self.cpu * 1000)

    def timeout_millis(self) -> int | None:
        return None if self.timeout is None else round(self.timeout * 1000)

    def describe(self) -> str:
        parts = []
        if (mem := self.memory_bytes()) is not None:
            parts.append(f"memory {format_size(mem)}")
        if self.pids is not None:
            parts.append(f"pids {self.pids}")
        if self.cpu is not None:
            parts.append(f"cpu {self.cpu:g} cores")
        if self.timeout is not None:
            parts.append(f"timeout {self.timeout:g}s")
        if (disk := self.disk_bytes()) is not None:
            parts.append(f"disk {format_size(disk)}")
        return ", ".join(parts) or "none"

    def to_json(self) -> dict[str, int | float]:
        """Normalised values (memory in bytes), for the sandbox helper."""
        out: dict[str, int | float] = {}
        if (mem := self.memory_bytes()) is not None:
            out["memory"] = mem
        if self.pids is not None:
            out["pids"] = self.pids
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if (disk := self.disk_bytes()) is not None:
            out["disk"] = disk
        return out


def problems(limits: Limits) -> list[tuple[str, str]]:
    """``(field, message)`` for every value that is out of range."""
    found: list[tuple[str, str]] = []
    try:
        mem = limits.memory_bytes()
    except UsageError as e:
        found.append(("memory", e.message))
    else:
        if mem is not None and mem < MIN_MEMORY:
            found.append(("memory", f"must be at least {format_size(MIN_MEMORY)}"))
    if limits.pids is not None and limits.pids < 1:
        found.append(("pids", "must be at least 1"))
    if limits.cpu is not None and not limits.cpu >= 0.01:
        found.append(("cpu", "must be at least 0.01 cores"))
    if limits.timeout is not None and not limits.timeout > 0:
        found.append(("timeout", "must be more than 0 seconds"))
    try:
        disk = limits.disk_bytes()
    except UsageError as e:
        found.append(("disk", e.message))
    else:
        if disk is not None and disk < MIN_DISK:
            found.append(("disk", f"must be at least {format_size(MIN_DISK)}"))
    return found
