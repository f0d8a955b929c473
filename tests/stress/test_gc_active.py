"""``repeatr cache gc --max-size 0`` while runs are using their shelves.

Eight runs (ns and chroot) hold a shelf each way: the busybox root and a
data ware; they wait for a file to appear until gc has run. gc must keep every shelf in
use (the jobs then still read their files and succeed) and remove the idle
one, a ware no running job uses.
"""

from __future__ import annotations

import json
import uuid
from contextlib import ExitStack

import pytest

from .conftest import Stress, assert_host_clean, host_mounts, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_gc_during_runs_keeps_shelves_in_use(stress: Stress) -> None:
    area = stress.area
    mounts_before = host_mounts(area)
    # An idle shelf: used once, by a run that is over.
    idle = stress.formula("cat /data/which", name="idle.json", inputs={"/data": area.data[3]})
    assert stress.run("run", str(idle), "-e", "ns").code == 0
    gate = stress.dir / "gate"
    gate.mkdir()
    marker = f"stress-gc-{uuid.uuid4().hex[:8]}"
    runs = []
    with ExitStack() as stack:
        for n in range(8):
            f = stress.formula(
                f"echo ready; while [ ! -e /gate/go ]; do sleep 0.05; done; cat /data/which && ls /bin/busybox # {marker}",
                name=f"busy{n}.json",
                inputs={"/data": area.data[n % 2], "/gate": f"mount:ro:{gate}"},
                env={"N": str(n)},
            )
            executor = "ns" if n % 2 else "chroot"
            runs.append(stack.enter_context(stress.started("run", str(f), "-e", executor, "--no-memo")))
        for _proc, lines in runs:
            lines.wait_for("out| ready")
        res = stress.run("cache", "gc", "--max-size", "0", "--format", "json")
        assert res.code == 0, res.stderr
        events = [json.loads(line) for line in res.stdout.splitlines()]
        result = events[-1]
        kept = {
            e["message"].split()[1].rstrip(":")
            for e in events
            if e["event"] == "log" and e["message"].endswith(": in use")
        }
        removed = set(result["removed"])
        assert kept == {area.busybox, area.data[0], area.data[1]}, result
        assert removed == {area.data[3]}, result
        # Release the jobs: each still sees its files.
        (gate / "go").touch()
        for proc, lines in runs:
            assert proc.wait(timeout=60) == 0, lines.text()
            wait_until(lambda lines=lines: lines.done.is_set(), 10, "stderr is read")
            assert "out| data ware" in lines.text() and "out| /bin/busybox" in lines.text()
    assert sorted(stress.shelves()) == sorted({area.busybox, area.data[0], area.data[1]})
    assert_host_clean(stress, mounts_before, repeatr_pids={p.pid for p, _ in runs}, markers=(marker,))
