"""The runc executor: the reference OCI runtime (Go), create/start/delete.

Isolation as ``ns`` (every namespace, the job is PID 1), plus the runtime's
device cgroup and masked /proc paths; limits through ``linux.resources``
(v1 memory, pids, cpu) and the helper's timeout. Costs ~30 ms more per run
than ``ns`` (runc's own start-up, three invocations). See ``repeatr.executors.oci``.
"""

from __future__ import annotations

from pathlib import Path

from repeatr.executors.base import ExecutorName, JobSpec
from repeatr.executors.oci import OciExecutor


class RuncExecutor(OciExecutor):
    name = ExecutorName.RUNC
    binary = "runc"

    def global_args(self, job: JobSpec, state: Path, log: Path) -> list[str]:
        return [*super().global_args(job, state, log), "--log-format", "json"]

