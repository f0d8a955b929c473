"""Subprocesses for the network tests: ``python -m tests.net.workers <command> ...``.

- ``index ROOT NETWORK SUBNET ID COUNT BARRIER OUT``: wait at the barrier,
  then allocate COUNT addresses, releasing every other one at once and the
  rest at the end; write one JSON line per lease to OUT:
  ``{"addr", "got", "rel"}`` (CLOCK_MONOTONIC ns right after ``allocate``
  returned and right before ``release`` was called).
- ``hold HOST NETWORK POLICY RUN_ID``: prepare a network, print its
  attachment as one JSON line, then sleep until killed.
- ``race HOST NETWORK RUN_ID BARRIER``: wait at the barrier, prepare a
  bridge network, tear it down, print "ok".

The barrier: each worker creates ``BARRIER/ready.<id>`` and waits for
``BARRIER/go``.
"""

from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv4Interface
from pathlib import Path

from repeatr.net.config import NetHost, Network
from repeatr.net.ipindex import IPIndex


def barrier(directory: Path, ident: str) -> None:
    (directory / f"ready.{ident}").touch()
    deadline = time.monotonic() + 60
    while not (directory / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("barrier timed out")
        time.sleep(0.001)


def host_from(text: str) -> NetHost:
    d = json.loads(text)
    return NetHost(
        state_dir=Path(d["state_dir"]), netns_prefix=d["netns_prefix"], veth_prefix=d["veth_prefix"]
    )


def network_from(text: str) -> Network:
    from ipaddress import IPv4Network

    d = json.loads(text)
    return Network(name=d["name"], subnet=IPv4Network(d["subnet"]), bridge=d["bridge"])


def index(root: str, network: str, subnet: str, ident: str, count: str, bar: str, out: str) -> None:
    idx = IPIndex(Path(root), network, subnet)
    barrier(Path(bar), ident)
    held: list[tuple[str, IPv4Interface, int]] = []
    lines = []
    for i in range(int(count)):
        run_id = f"w{ident}r{i}"
        addr = idx.allocate(run_id)
        got = time.monotonic_ns()
        if i % 2 == 0:
            rel = time.monotonic_ns()
            idx.release(run_id)
            lines.append({"addr": str(addr.ip), "got": got, "rel": rel})
        else:
            held.append((run_id, addr, got))
    for run_id, addr, got in held:
        rel = time.monotonic_ns()
        idx.release(run_id)
        lines.append({"addr": str(addr.ip), "got": got, "rel": rel})
    Path(out).write_text("".join(json.dumps(x) + "\n" for x in lines))


def hold(host: str, network: str, policy: str, run_id: str) -> None:
    from repeatr.net.setup import prepare_sync

    net, h = network_from(network), host_from(host)
    att = prepare_sync(policy, run_id, "holder", network=net, host=h)
    print(
        json.dumps(
            {
                "netns": str(att.netns),
                "address": str(att.address) if att.address else None,
                "veth": att.veth,
            }
        ),
        flush=True,
    )
    while True:
        time.sleep(60)


def race(host: str, network: str, run_id: str, bar: str) -> None:
    from repeatr.net.setup import prepare_sync, teardown_sync

    h, n = host_from(host), network_from(network)
    barrier(Path(bar), run_id)
    att = prepare_sync("bridge", run_id, "racer", network=n, host=h)
    teardown_sync(att)
    print("ok", flush=True)


def main(argv: list[str]) -> None:
    command, *args = argv
    {"index": index, "hold": hold, "race": race}[command](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
