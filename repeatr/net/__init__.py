"""A run's network: namespaces, veth pairs on a host bridge, and the IP index.

Data flow: the supervisor calls :func:`repeatr.net.setup.prepare` after
assembly and before launch, gives the executor the resulting
:class:`~repeatr.net.setup.NetAttachment` (namespace path, address,
resolv.conf and hosts contents), and calls :func:`repeatr.net.setup.teardown`
in its teardown phase. :func:`repeatr.net.gc.collect` reclaims what runs
killed with SIGKILL left behind.

Modules:

- ``config``: policies (none, host, bridge), networks (name, subnet,
  bridge), where state lives and how kernel objects are named;
- ``ipindex``: address leases in flock-guarded files, no server;
- ``records``: per-run records naming a run's kernel objects and owner;
- ``netns``: named network namespaces (nsfs bind mounts) made without forking;
- ``bridge``: the host bridge and veth pairs over rtnetlink (``repeatr.linux.rtnetlink``);
- ``dns``: the run's resolv.conf and hosts;
- ``setup``: prepare / teardown;
- ``gc``: reclaim what dead runs left;
- ``nat``: outbound NAT, an explicit host setting (nftables).

See docs/networking.md.
"""

#: Where network state lives and how kernel objects are named by default
#: (:class:`~repeatr.net.config.NetHost`'s defaults). Here, import-free, so that
#: every run's gc can see there is nothing to do (``repeatr.net.gc.idle``)
#: without importing the network modules (~2.5 ms of CPU).
STATE_DIR = "/run/repeatr/net"
NETNS_DIR = "/run/netns"
NETNS_PREFIX = "repeatr-"
VETH_PREFIX = "rpr"

__all__ = ["DEFAULT_HOST", "DEFAULT_NETWORK", "NetHost", "Network", "NetworkPolicy"]


def __getattr__(name: str) -> object:
    """The re-exports of ``repeatr.net.config``, imported on first use."""
    if name in __all__:
        from repeatr.net import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
