"""Worker resources: what a host offers, what a node needs.

Dask sends a task only to a worker that declares every resource the task
asks for (``client.submit(…, resources=…)``). A repeatr worker declares:

- ``repeatr``: it runs repeatr's preload (every task asks for it, so a plain
  Dask worker of the same cluster never gets one);
- ``executor-<name>``: each executor whose preflight passes on this host
  (``ns``, ``crun``, ``runc``, ``chroot``, ``gvisor``);
- ``network-<policy>``: each network policy one of those executors can give
  (``none``, ``host``), and ``network-bridge`` when one can isolate the
  network (a bridge network joins such a namespace).

Counts are large (:data:`PLENTY`): a resource says *what* a worker can
run, never how much at once (its threads say that). A node asks for
``executor-<name>`` when the run names an executor (``--executor``; ``auto``
asks for none and lets the worker choose the best it has) and for
``network-<policy>`` when its formula asks for a network.

No Dask import here: the client and the worker both use these names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from repeatr.graph.model import Node

#: Every repeatr worker declares it; every task asks for it.
REPEATR = "repeatr"
#: A worker's count of each resource: enough never to limit how many tasks run.
PLENTY = 1_000_000.0


def executor_resource(name: str) -> str:
    return f"executor-{name}"


def network_resource(policy: str) -> str:
    return f"network-{policy}"


def offered(executors: Iterable[str], networks: Iterable[str]) -> dict[str, float]:
    """The resources a worker whose usable executors and network policies these are declares."""
    names = [REPEATR, *map(executor_resource, executors), *map(network_resource, networks)]
    return dict.fromkeys(sorted(set(names)), PLENTY)


def needed(node: Node, executor: str) -> dict[str, float]:
    """The resources a worker must offer to run ``node`` with ``executor`` (or ``auto``)."""
    wants = {REPEATR: 1.0}
    if executor != "auto":
        wants[executor_resource(executor)] = 1.0
    network = node.action.get("network")
    if isinstance(network, str) and network:
        wants[network_resource(network)] = 1.0
    return wants


def missing(wants: Mapping[str, float], workers: Iterable[Mapping[str, float]]) -> list[str]:
    """What no single worker of ``workers`` (their declared resources) offers of ``wants``.

    Empty when one worker offers it all; else the wanted resources the
    closest worker lacks (for the message).
    """
    best: list[str] | None = None
    for offer in workers:
        lacking = sorted(r for r, n in wants.items() if offer.get(r, 0.0) < n)
        if not lacking:
            return []
        if best is None or len(lacking) < len(best):
            best = lacking
    return best if best is not None else sorted(wants)
