"""The ns executor: our own namespaces, no external binary.

The helper unshares mount, pid, uts, ipc and (for ``network="none"``) net
namespaces and assembles the root; it then forks the job, which is PID 1 of
the new pid namespace: it mounts /proc, enters a nested mount namespace,
pivots into the root and detaches the old one, sets the user and the
capability sets, sets no_new_privs, and execs. ``lo`` is up in the new
network namespace; the hostname is the formula's.

As PID 1 the job has init semantics: signals it has no handler for are
ignored when sent from inside the namespace (``kill -9 $$`` does nothing),
and when it exits every other process in the namespace is killed.
"""

from __future__ import annotations

from repeatr.executors._preflight import require_filesystem, require_namespaces, require_root
from repeatr.executors.base import NAMESPACES, Capabilities, ExecutorName
from repeatr.executors.helper import HelperExecutor, cgroup_limits
from repeatr.executors.protocol import NetworkPolicy


class NsExecutor(HelperExecutor):
    name = ExecutorName.NS

    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=NAMESPACES,
            networks=frozenset({NetworkPolicy.NONE, NetworkPolicy.HOST}),
            job_is_pid1=True,
            hostname=True,
            limits=cgroup_limits(),
        )

    def preflight(self) -> None:
        require_root("ns")
        require_namespaces(["mnt", "pid", "uts", "ipc", "net"])
        require_filesystem("overlay", "load the module with `modprobe overlay`")
        require_filesystem("proc", "a kernel with procfs")
