"""The chroot executor: its own filesystem, processes and IPC; the host's network.

The helper unshares mount, pid and ipc namespaces and assembles the root;
the job is PID 1 of the new pid namespace and, like ``ns``, mounts its /proc
in a nested mount namespace, pivots into the root and detaches the old one
(the name is historical: there is no chroot(2), so ``chroot`` + ``cd ..``
with CAP_SYS_CHROOT finds no host tree to climb into). Its /proc is its own
pid namespace's, mounted ``hidepid=invisible``, masked and partly read-only
as runc does (``repeatr.assemble.ops.Proc``): the job sees, signals and
reads only its own processes (never the host's, its helper or another
job's), writes no sysctl, and everything it starts dies with it.

What it shares with the host: the network namespace (only ``network="host"``
is accepted: the host's interfaces, ports and abstract unix sockets) and the
hostname. Capabilities that act on a network namespace (CAP_NET_ADMIN,
CAP_NET_RAW: reconfigure, sniff or spoof the host's network) are refused
(``check_job``); use ``ns`` for jobs that need them, or for a network of
their own.
"""

from __future__ import annotations

from repeatr.assemble.ops import Op, Proc
from repeatr.errors import ExecutorError
from repeatr.executors._preflight import require_filesystem, require_namespaces, require_root
from repeatr.executors.base import Capabilities, ExecutorName, Isolation, JobSpec
from repeatr.executors.helper import HelperExecutor, cgroup_limits
from repeatr.executors.protocol import NetworkPolicy
from repeatr.linux import capability

#: Capabilities over the network namespace the job would share with the host.
HOST_NETWORK_CAPABILITIES = frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW"})


class ChrootExecutor(HelperExecutor):
    name = ExecutorName.CHROOT

    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=frozenset({Isolation.MOUNT, Isolation.PID, Isolation.IPC}),
            networks=frozenset({NetworkPolicy.HOST}),
            job_is_pid1=True,
            hostname=False,
            limits=cgroup_limits(),
        )

    def preflight(self) -> None:
        require_root("chroot")
        require_namespaces(["mnt", "pid", "ipc"])
        require_filesystem("overlay", "load the module with `modprobe overlay`")
        require_filesystem("proc", "a kernel with procfs")

    def check_job(self, job: JobSpec) -> None:
        super().check_job(job)
        last = capability.running_last_cap()
        asked = capability.cap_numbers(job.capabilities, last_cap=last)
        refused = sorted(
            name for name in HOST_NETWORK_CAPABILITIES
            if capability.CAPABILITIES[name] in asked
        )
        if refused:
            raise ExecutorError(
                f"executor chroot cannot grant {', '.join(refused)}: the job shares the "
                "host's network namespace, so it would reconfigure, sniff or spoof the host's "
                "network",
                hint="use the ns executor (a network namespace of its own), or the routine policy",
            )

    def job_mounts(self, job: JobSpec) -> tuple[Op, ...]:
        """The job's mounts, its /proc with ``hidepid=invisible``."""
        return tuple(
            Proc(op.dest, hidepid="invisible") if isinstance(op, Proc) else op
            for op in job.mounts
        )
