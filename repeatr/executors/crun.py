"""The crun executor: the OCI runtime in C, the fastest of the three.

Same bundle and driver as runc (``repeatr.executors.oci``). crun 1.8.1
refuses hybrid cgroups ("drop all controllers from cgroupv2"): the helper
binds /dev/null over ``/sys/fs/cgroup/unified/cgroup.controllers`` in its
private mount namespace before starting crun (host-notes.md), so crun sees a
v2 hierarchy without controllers and uses the v1 ones. The host is untouched.

The seccomp profile goes in twice: as ``linux.seccomp`` (readable, what runc
gets) and, compiled, in crun's ``run.oci.seccomp_bpf_data`` annotation (the
same cached program the ``ns`` executor installs): crun then loads it as is
instead of compiling the profile again, ~25 ms of every run.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from repeatr.executors.base import ExecutorName, JobSpec
from repeatr.executors.oci import OciExecutor, capability_names
from repeatr.executors.seccomp import for_capabilities

#: crun(1): raw data for seccomp(SECCOMP_SET_MODE_FILTER), base64; replaces linux.seccomp.
BPF_ANNOTATION = "run.oci.seccomp_bpf_data"


class CrunExecutor(OciExecutor):
    name = ExecutorName.CRUN
    binary = "crun"
    hide_cgroup2 = True

    def config(self, job: JobSpec, cgroups_path: str) -> dict[str, Any]:
        cfg = super().config(job, cgroups_path)
        if job.seccomp:
            caps = capability_names(job.capabilities, self.known_capabilities().last_capability)
            program = self.compiled(for_capabilities(caps))
            cfg["annotations"] = {BPF_ANNOTATION: base64.b64encode(program).decode()}
        return cfg

    def global_args(self, job: JobSpec, state: Path, log: Path) -> list[str]:
        return [
            self.runtime_path(), "--root", str(state), f"--log=file:{log}", "--log-format=json",
        ]
