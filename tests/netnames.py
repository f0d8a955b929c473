"""Per-session names for what network tests make on the host: links, namespaces.

Other sessions run this suite on the same host at the same time; with one
fixed prefix (``rprtest-``, ``rpt``, bridge ``rpttest0``) each session's
``no_leftovers`` saw the others' namespaces and veths come and go, two
sessions fought over one test bridge, and a net gc test could reclaim
another session's veths. Every name here carries :data:`SUFFIX`, four
random lowercase letters chosen once per session (``REPEATR_TEST_NET_SUFFIX``
pins it).
"""

from __future__ import annotations

import os

from tests.rootfs import FOREIGN_NETNS_PREFIXES, STRICT


def _suffix() -> str:
    pinned = os.environ.get("REPEATR_TEST_NET_SUFFIX")
    if pinned:
        return pinned
    return "".join(chr(ord("a") + b % 26) for b in os.urandom(4))


SUFFIX = _suffix()
#: The veth prefix (1-7 lowercase letters; +8 hex = 15, the kernel's limit).
VETH_PREFIX = f"rpt{SUFFIX}"
#: The netns prefix (``/run/netns/<prefix><run id>``).
NETNS_PREFIX = f"rprtest{SUFFIX}-"


def bridge(n: int) -> str:
    """The session's ``n``-th test bridge."""
    return f"rpb{SUFFIX}{n}"


def foreign(name: str) -> bool:
    """A link or netns name another session's tests or runs made (never one of ours)."""
    if STRICT or name.startswith((VETH_PREFIX, NETNS_PREFIX, f"rpb{SUFFIX}")):
        return False
    return name.startswith((*FOREIGN_NETNS_PREFIXES, "rpt", "rpb"))
