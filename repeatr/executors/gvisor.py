"""The gvisor executor: runsc, a user-space kernel between the job and the host.

The strongest isolation here: the job's system calls are served by gVisor's
Sentry (``--platform=ptrace``: the only platform this old Debian build runs
without nested virtualisation), not by the host kernel. It costs the most
(~130 ms more per run) and some kernel interfaces differ (/proc is
gVisor's). Use it for untrusted jobs; ``auto`` never picks it unasked.

Networking (host-notes.md): runsc's own netstack refuses to start in a
namespace whose /proc/sys/net it cannot configure, so ``network="none"`` is
``--network=none`` (loopback only, gVisor's); a netns prepared by
``repeatr.net`` (``bridge``: ``JobSpec.network.netns``) is ``--network=host`` with the
spec's network namespace path pointing at it; ``network="host"`` is
``--network=host`` without a network namespace.

Driven with ``runsc run`` (the ``run`` style of ``repeatr.executors.oci_sandbox``):
its exit code is the job's, and the gofer and sandbox processes are reaped
with it (the helper is their subreaper), so ``runsc delete`` never waits for
them. ``--ignore-cgroups``: the Sentry's host threads are not the job's
processes, so v1 memory/pids/cpu groups would not mean what the formula asks
for; only the timeout is enforced, and formulas with other limits are refused.

The default seccomp profile: ``--oci-seccomp`` makes the Sentry apply
config.json's ``linux.seccomp`` to the job's syscalls (without it, runsc
ignores it); its own filters on its host threads are there either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from repeatr.executors.base import NAMESPACES, Capabilities, ExecutorName, JobSpec
from repeatr.executors.helper import disk_limit
from repeatr.executors.oci import OciExecutor
from repeatr.executors.protocol import NetworkPolicy
from repeatr.model.limits import LimitName

CAP_AUDIT_READ = 37  # the last capability this runsc (2022-12) knows; it refuses newer ones


class GvisorExecutor(OciExecutor):
    name = ExecutorName.GVISOR
    binary = "runsc"
    style = "run"

    def package(self) -> str:
        return "runsc"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=NAMESPACES,
            networks=frozenset({NetworkPolicy.NONE, NetworkPolicy.HOST}),
            job_is_pid1=False,  # PID 1, but the Sentry does not give it init's signal rules
            hostname=True,
            limits=frozenset({LimitName.TIMEOUT, *disk_limit()}),
            sets_home=True,
            user_space_kernel=True,
            last_capability=CAP_AUDIT_READ,
            env_order=False,
        )

    def config(self, job: JobSpec, cgroups_path: str) -> dict[str, Any]:
        cfg = super().config(job, cgroups_path)
        # runsc puts its own tmpfs on /tmp unless the spec mounts something
        # there: bind the root's /tmp onto itself so the cradle's /tmp stays.
        if any(step.path == "/tmp" for step in job.cradle):
            tmp = os.path.join(os.fspath(job.root), "tmp")
            cfg["mounts"].append(
                {"destination": "/tmp", "type": "bind", "source": tmp, "options": ["rbind", "rw"]}
            )
        return cfg

    def runtime_mountpoints(self, job: JobSpec) -> list[str]:
        # runsc also mounts a sysfs on /sys, creating it in the root if missing.
        return sorted({*super().runtime_mountpoints(job), "/sys"})

    def global_args(self, job: JobSpec, state: Path, log: Path) -> list[str]:
        # A prepared namespace (bridge) is the host's network as runsc sees it.
        network = "none" if job.network.policy is NetworkPolicy.NONE else "host"
        return [
            self.runtime_path(), "--root", os.fspath(state), "--log", os.fspath(log),
            "--platform=ptrace", f"--network={network}", "--ignore-cgroups",
            "--net-raw",  # else runsc drops CAP_NET_RAW, which the governor policy grants
            # the Sentry applies config.json's seccomp profile to the job's syscalls
            *(["--oci-seccomp"] if job.seccomp else []),
        ]
