"""Sysctls repeatr sets in the network namespaces it makes (stdlib ``os`` only: the
sandbox helper imports it).

``net.ipv4.ping_group_range`` says which groups may open ICMP echo
("ping") datagram sockets; a new network namespace allows none, so ``ping``
fails with "permission denied" for a job without CAP_NET_RAW (the default
``routine`` policy). Docker and Podman open it to every group in each
container's namespace; repeatr does the same in every namespace it makes
(``repeatr.net`` for bridge and none, the ns executor's own, and the OCI
spec's ``linux.sysctl`` for a namespace the runtime makes). It is written
before the job starts, through ``/proc/sys/net``, which shows the network
namespace of the *calling thread*; the host's own setting is never touched.
"""

from __future__ import annotations

import os

PING_GROUP_RANGE = "net.ipv4.ping_group_range"
#: Every group (gids 0 to 2**31 - 1, the kernel's limit), as Docker sets it.
ALL_GROUPS = "0 2147483647"

#: What repeatr sets in the namespaces it makes (also the OCI ``linux.sysctl``).
NETNS_SYSCTLS = {PING_GROUP_RANGE: ALL_GROUPS}


def _path(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def configure_netns() -> None:
    """Set :data:`NETNS_SYSCTLS` in the calling thread's network namespace (never the host's)."""
    for name, value in NETNS_SYSCTLS.items():
        fd = os.open(_path(name), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def read(name: str) -> str:
    """A sysctl's value in the calling thread's network namespace."""
    with open(_path(name)) as f:
        return f.read().strip()
