"""Many ``repeatr run`` at once over one shared cache, as ``make -j`` / ``xargs -P`` start them.

64 invocations (96 with ``--soak``) per network policy, started together, mixing every usable
executor, 16 distinct formulas each run three times (some memoized, some
``--no-memo``), over five distinct input wares. Afterwards: every run
succeeded with the same outputs as its twins, each ware was unpacked exactly
once (counted from the ``--debug`` lines ``input PATH: WARE unpacked``), and
the host is as before (``assert_host_clean``).

The network policy is one parameter: the formula's default, and ``bridge``
(executors with a network namespace only, on a stress-only bridge), where
each job also claims its address create-exclusively in a shared dir while it
runs, so an address held by two jobs at once fails the run; afterwards no
lease, veth or namespace is left.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

import pytest

from .conftest import SCALE, Stress, assert_host_clean, host_mounts, usable_executors

pytestmark = [pytest.mark.root, pytest.mark.slow]

#: None: the formula says nothing about the network (the executor's default).
NETWORKS: list[str | None] = [None, "bridge"]
BRIDGE_ARGS = ("--bridge", "rprstress0", "--subnet", "10.213.252.0/24")
RUNS = 64 if SCALE == 1 else 96
DISTINCT = 16
UNPACKED = re.compile(r"input (\S+): (\S+) unpacked")


@pytest.mark.parametrize("network", NETWORKS, ids=lambda n: n or "default")
@pytest.mark.parametrize("round_", range(SCALE), ids=lambda r: f"round{r}")
def test_concurrent_runs_share_one_cache(stress: Stress, network: str | None, round_: int) -> None:
    executors = usable_executors()
    if network == "bridge":
        executors = [e for e in executors if e != "chroot"]  # no network namespace
    area = stress.area
    marker = f"stress-conc-{uuid.uuid4().hex[:8]}"
    held = stress.dir / "held"
    held.mkdir(mode=0o777, exist_ok=True)
    held.chmod(0o777)
    claim = (
        "set -C; a=$(ip -o -4 addr show eth0 | sed 's/.*inet \\([0-9.]*\\).*/\\1/'); "
        "echo $$ > /held/$a || exit 99; sleep 0.2; rm /held/$a; "
        if network == "bridge" else ""
    )
    formulas = []
    for n in range(DISTINCT):
        inputs = {} if n % 5 == 4 else {"/data": area.data[n % len(area.data)]}
        if network == "bridge":
            inputs["/held"] = f"mount:rw:{held}"
        script = (
            f"{claim}mkdir -p /task/out && {{ cat /data/which 2>/dev/null; echo formula {n}; }}"
            f" > /task/out/result && sleep 0.{n % 4} # {marker}"
        )
        formulas.append(
            stress.formula(
                script, name=f"f{n}.json", inputs=inputs, outputs=("/task/out",), network=network
            )
        )
    wares_used = {area.busybox} | {area.data[n % len(area.data)] for n in range(DISTINCT) if n % 5 != 4}
    mounts_before = host_mounts(area)

    results = {}
    with ExitStack() as stack:
        procs = []
        for i in range(RUNS):
            n = i % DISTINCT
            args = ["run", str(formulas[n]), "-e", executors[i % len(executors)], "--debug"]
            if network == "bridge":
                args += BRIDGE_ARGS
            if i % 2:
                args.append("--no-memo")
            procs.append((i, n, args[3], stack.enter_context(_started(stress, args))))
        for i, n, executor, proc in procs:
            out, err = proc.communicate(timeout=240)
            results[i] = (n, executor, proc.pid, proc.returncode, out, err)

    failures = [
        f"run {i} (formula {n}, {ex}): exit {code}\n{err[-2000:]}"
        for i, (n, ex, _pid, code, _out, err) in results.items()
        if code != 0
    ]
    assert not failures, "\n\n".join(failures)

    unpacked: Counter[str] = Counter()
    outputs: defaultdict[int, set[str]] = defaultdict(set)
    for n, _ex, _pid, _code, out, err in results.values():
        for _path, ware in UNPACKED.findall(err):
            unpacked[ware] += 1
        outputs[n].add(stress_record(out)["results"]["/task/out"])
    assert unpacked == dict.fromkeys(wares_used, 1), "each ware must be unpacked exactly once"
    # Twins (same formula) agree, and different formulas made different outputs.
    assert all(len(wares) == 1 for wares in outputs.values()), outputs
    assert len({next(iter(w)) for w in outputs.values()}) == DISTINCT
    assert sorted(stress.shelves()) == sorted(wares_used)
    assert_host_clean(
        stress, mounts_before, repeatr_pids={r[2] for r in results.values()}, markers=(marker,)
    )
    if network == "bridge":
        assert list(held.iterdir()) == []
        leases = Path("/run/repeatr/net/rprstress0/leases")
        assert not leases.exists() or list(leases.iterdir()) == [], "IP leases left behind"
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        subprocess.run(["ip", "link", "del", "rprstress0"], check=False, capture_output=True)
        subprocess.run(["rm", "-rf", "/run/repeatr/net/rprstress0"], check=False)
        assert not re.search(r" rpr[0-9a-f]{8}[:@]", links), "veths left behind"


def stress_record(stdout: str) -> dict[str, object]:
    import json

    return dict(json.loads(stdout))


class _started:
    """Popen that is killed and reaped if the test fails before reading it."""

    def __init__(self, stress: Stress, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            stress.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def __enter__(self) -> subprocess.Popen[str]:
        return self.proc

    def __exit__(self, *exc: object) -> None:
        if self.proc.returncode is None:  # not read by the test (it failed first)
            self.proc.kill()
            self.proc.communicate()
