"""The crun executor: the OCI runtime in C, the fastest of the three.

Same bundle and driver as runc (``repeatr.executors.oci``). crun 1.8.1
refuses hybrid cgroups ("drop all controllers from cgroupv2"): the helper
binds /dev/null over ``/sys/fs/cgroup/unified/cgroup.controllers`` in its
private mount namespace before starting crun (host-notes.md), so crun sees a
v2 hierarchy without controllers and uses the v1 ones. The host is untouched.
"""

from __future__ import annotations

from pathlib import Path

from repeatr.executors.base import ExecutorName, JobSpec
from repeatr.executors.oci import OciExecutor


class CrunExecutor(OciExecutor):
    name = ExecutorName.CRUN
    binary = "crun"
    hide_cgroup2 = True

    def global_args(self, job: JobSpec, state: Path, log: Path) -> list[str]:
        return [
            self.runtime_path(), "--root", str(state), f"--log=file:{log}", "--log-format=json",
        ]
