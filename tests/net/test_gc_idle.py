"""``repeatr.net.gc.idle``: every run's gc sees there is nothing to do without importing
the network modules, and never calls idle what ``collect`` would act on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from repeatr.net import gc
from repeatr.net.config import NetHost
from repeatr.net.ipindex import IPIndex
from repeatr.net.records import AttachRecord, write
from repeatr.owner import Owner


def _host(tmp_path: Path, veth_prefix: str = "rpq") -> NetHost:
    return NetHost(
        state_dir=tmp_path / "state", netns_dir=tmp_path / "netns",
        netns_prefix="rprtest-", veth_prefix=veth_prefix,
    )


def test_idle_until_there_is_something(tmp_path: Path) -> None:
    host = _host(tmp_path)
    assert gc.idle(host)  # nothing exists at all
    (tmp_path / "state" / "runs.d").mkdir(parents=True)
    (tmp_path / "netns").mkdir()
    (tmp_path / "netns" / "other-ns").touch()
    index = IPIndex(host.state_dir, "t", "10.253.0.0/24")
    index.allocate("r1")
    index.release("r1")
    assert gc.idle(host)  # an empty records dir, an index without leases, another's ns
    assert gc.collect(host).empty

    index.allocate("r2")
    assert not gc.idle(host)  # a lease: its owner may be dead
    index.release("r2")
    assert gc.idle(host)

    (tmp_path / "netns" / "rprtest-r3").touch()
    assert not gc.idle(host)  # a namespace file of ours
    (tmp_path / "netns" / "rprtest-r3").unlink()

    write(host, AttachRecord(run_id="r4", owner=str(Owner.current()), policy="none"))
    assert not gc.idle(host)  # a record


def test_an_interface_named_as_ours_is_not_idle(tmp_path: Path) -> None:
    assert not gc.idle(_host(tmp_path, veth_prefix="lo"))  # /sys/class/net/lo


def test_importing_gc_imports_no_network_module() -> None:
    code = (
        "import sys, repeatr.net.gc; "
        "print(sorted(m for m in sys.modules if m.startswith('repeatr.net.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['repeatr.net.gc']"
