"""The chroot executor: filesystem isolation only.

The job runs chrooted into the assembled root, with the formula's user and
capabilities, in the helper's private mount namespace (its mounts are never
in the host's). It is *not* in its own pid, network, ipc or uts namespace:
it sees the host's processes and shares the host's network (only
``network="host"`` is accepted) and hostname. Processes it leaves behind are
killed when it exits (the helper is their subreaper). Use ``ns`` for isolation.
"""

from __future__ import annotations

from repeatr.executors._preflight import require_filesystem, require_namespaces, require_root
from repeatr.executors.base import Capabilities, ExecutorName, Isolation
from repeatr.executors.helper import HelperExecutor, cgroup_limits


class ChrootExecutor(HelperExecutor):
    name = ExecutorName.CHROOT
    mode = "chroot"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=frozenset({Isolation.MOUNT}),
            networks=frozenset({"host"}),
            job_is_pid1=False,
            hostname=False,
            limits=cgroup_limits(),
        )

    def preflight(self) -> None:
        require_root("chroot")
        require_namespaces(["mnt"])
        require_filesystem("overlay", "load the module with `modprobe overlay`")
