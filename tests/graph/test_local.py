"""``run_graph``: real runs on the ns executor, nodes reading each other's outputs."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from repeatr.cache import Cache
from repeatr.cache.shared import SharedCache
from repeatr.errors import Category, RepeatrError
from repeatr.fileset.pack import hash_dir_exact
from repeatr.fileset.unpack import unpack_stream
from repeatr.graph.local import run_graph
from repeatr.graph.model import NodeResult, NodeState, Output
from repeatr.model.filters import UNPACK_LOSSLESS
from repeatr.model.wareid import WareID
from repeatr.runner.batch import BatchOptions, in_flight
from repeatr.warehouse.cafile import CAFileWarehouse
from tests.rootfs import processes_with, remove_tree

from .conftest import Kit, Recorder, graph_of

pytestmark = [pytest.mark.root, pytest.mark.anyio]

FINAL = {NodeState.MEMOIZED, NodeState.DONE, NodeState.FAILED, NodeState.SKIPPED}


def _append(name: str, *reads: str) -> str:
    """A script copying each read tree's ``log`` into /task/out/log, then adding ``name``."""
    cats = " ".join(f"/in/{r}/log" for r in reads)
    cat = f"cat {cats} > /task/out/log; " if reads else ""
    return f"mkdir -p /task/out; {cat}echo {name} >> /task/out/log; cat /task/out/log"


def _reads(*names: str) -> dict[str, Output]:
    return {f"/in/{n}": Output(n, "/task/out") for n in names}


async def test_diamond(kit: Kit) -> None:
    a = kit.node("a", _append("a"), outputs=("/task/out",))
    b = kit.node("b", _append("b", "a"), reads=_reads("a"), outputs=("/task/out",))
    c = kit.node("c", _append("c", "a"), reads=_reads("a"), outputs=("/task/out",))
    d = kit.node("d", _append("d", "b", "c"), reads=_reads("b", "c"), outputs=("/task/out",))
    rec = Recorder()
    outcome = await run_graph(graph_of(a, b, c, d), kit.options, BatchOptions(jobs=2), rec.events())
    assert outcome.exit_status == 0 and not outcome.failed and not outcome.skipped
    assert set(outcome.done) == {"a", "b", "c", "d"}
    assert b"".join(rec.lines["d"]) == b"a\nb\na\nc\nd\n"
    for name in "abcd":
        assert rec.of(name) == [NodeState.PENDING, NodeState.RUNNING, NodeState.DONE]
        assert outcome.done[name].results == rec.records[name]["results"]
    # Each starts only once what it reads is done.
    for before, after in (("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")):
        assert rec.index(before, NodeState.DONE) < rec.index(after, NodeState.RUNNING)


async def test_fan_out_of_32_shares_one_cache(kit: Kit) -> None:
    root = kit.node("root", _append("root"), outputs=("/task/out",))
    leaves = [
        kit.node(f"l{i:02d}", _append(f"l{i:02d}", "root"), reads=_reads("root")) for i in range(32)
    ]
    rec = Recorder()
    async with SharedCache(kit.state) as shared:
        outcome = await run_graph(
            graph_of(root, *leaves), kit.options, BatchOptions(jobs=4), rec.events(), cache=shared
        )
        # The rootfs and root's output: each taken once for 33 runs.
        assert shared.holds == 2
    assert outcome.exit_status == 0 and len(outcome.done) == 33
    for leaf in leaves:
        assert b"".join(rec.lines[leaf.name]) == f"root\n{leaf.name}\n".encode()
    # At most in_flight(-j) nodes under way at once (their jobs: -j, the sandbox
    # server's bound), and that many: every leaf waited only for its place.
    running = peak = 0
    for _name, state, _t in rec.states:
        running += (state is NodeState.RUNNING) - (state in FINAL - {NodeState.SKIPPED})
        peak = max(peak, running)
    assert peak == in_flight(4)


async def test_a_node_starts_when_what_it_reads_is_done_not_in_waves(kit: Kit) -> None:
    """A slow step cannot end before a chain beside it has ended: no waiting for it."""
    gate = kit.state.parent / "gate"
    gate.mkdir()
    slow = kit.node("slow", "until [ -e /gate/open ]; do sleep 0.02; done")
    slow = replace(slow, inputs={**slow.inputs, "/gate": f"mount:ro:{gate}"})
    chain = [kit.node("c0", _append("c0"), outputs=("/task/out",))]
    for i in (1, 2, 3):
        prev = chain[-1].name
        chain.append(
            kit.node(f"c{i}", _append(f"c{i}", prev), reads=_reads(prev), outputs=("/task/out",))
        )
    rec = Recorder()
    events = rec.events()
    recorded = events.state

    def state(name: str, new: NodeState, seconds: float) -> None:
        recorded(name, new, seconds)
        if name == "c3" and new is NodeState.DONE:
            (gate / "open").touch()

    events.state = state
    with anyio.fail_after(120):
        outcome = await run_graph(graph_of(slow, *chain), kit.options, BatchOptions(jobs=2), events)
    assert outcome.exit_status == 0, outcome.failed
    assert rec.index("c3", NodeState.DONE) < rec.index("slow", NodeState.DONE)


async def test_chain(kit: Kit) -> None:
    nodes = [kit.node("s00", _append("s00"), outputs=("/task/out",))]
    for i in range(1, 12):
        prev = nodes[-1].name
        nodes.append(
            kit.node(
                f"s{i:02d}", _append(f"s{i:02d}", prev), reads=_reads(prev), outputs=("/task/out",)
            )
        )
    rec = Recorder()
    outcome = await run_graph(graph_of(*nodes), kit.options, BatchOptions(jobs=4), rec.events())
    assert outcome.exit_status == 0
    assert b"".join(rec.lines["s11"]) == b"".join(f"s{i:02d}\n".encode() for i in range(12))


async def test_failure_in_the_middle_skips_only_its_dependents(kit: Kit) -> None:
    a = kit.node("a", _append("a"), outputs=("/task/out",))
    b = kit.node("b", "exit 3", reads=_reads("a"), outputs=("/task/out",))
    c = kit.node("c", _append("c", "b"), reads=_reads("b"), outputs=("/task/out",))
    d = kit.node("d", _append("d", "c"), reads=_reads("c"))
    e = kit.node("e", _append("e", "a"), reads=_reads("a"))
    f = kit.node("f", "sleep 0.3; echo independent")
    rec = Recorder()
    graph = graph_of(a, b, c, d, e, f)
    outcome = await run_graph(graph, kit.options, BatchOptions(jobs=3), rec.events())
    assert outcome.exit_status == Category.JOB_FAILED
    assert set(outcome.done) == {"a", "e", "f"}
    failed = outcome.failed["b"]
    assert isinstance(failed, NodeResult) and failed.exit_code == 3
    assert outcome.skipped == ("c", "d")
    assert rec.of("c") == [NodeState.PENDING, NodeState.SKIPPED]
    assert rec.of("b") == [NodeState.PENDING, NodeState.RUNNING, NodeState.FAILED]
    assert "c" not in rec.lines and "d" not in rec.lines
    # --ignore-job-exit: still failed (dependents need exit 0), but not the exit status.
    again = await run_graph(
        graph, kit.options, BatchOptions(jobs=3, ignore_job_exit=True), Recorder().events()
    )
    assert again.exit_status == 0 and again.skipped == ("c", "d")


async def test_an_error_outranks_a_job_failure(kit: Kit) -> None:
    bad = kit.node("bad", "true")
    bad = type(bad)(**{**bad.__dict__, "inputs": {"/": "tar:" + "9" * 40}})
    failing = kit.node("failing", "exit 1")
    reads = {"/in": Output("bad", "/task/out"), "/in2": Output("failing", "/task/out")}
    after = kit.node("after", "true", reads=reads)
    rec = Recorder()
    outcome = await run_graph(
        graph_of(bad, failing, after), kit.options, BatchOptions(jobs=2), rec.events()
    )
    error = outcome.failed["bad"]
    assert isinstance(error, RepeatrError)
    assert outcome.exit_status == error.exit_code != Category.JOB_FAILED
    # Both of what it reads failed: skipped once.
    assert outcome.skipped == ("after",)
    assert rec.of("after") == [NodeState.PENDING, NodeState.SKIPPED]


async def test_needed_output_missing(kit: Kit) -> None:
    a = kit.node("a", _append("a"), outputs=("/task/out",))
    b = kit.node("b", "true", reads={"/in": Output("a", "/task/nope")})
    c = kit.node("c", "true", reads={"/in": Output("b", "/task/out")})
    rec = Recorder()
    outcome = await run_graph(graph_of(a, b, c), kit.options, BatchOptions(jobs=2), rec.events())
    error = outcome.failed["b"]
    assert isinstance(error, RepeatrError) and error.category is Category.USAGE
    assert "'/task/nope'" in str(error) and "step 'b'" in str(error)
    assert outcome.skipped == ("c",) and outcome.exit_status == Category.USAGE


async def test_fail_fast_cancels_the_running_ones(kit: Kit) -> None:
    marker = "sleep 4949"
    failing = kit.node("failing", "sleep 0.5; exit 9")
    slow = [kit.node(f"w{i}", f"{marker}; echo {i}") for i in range(3)]
    after = kit.node("after", "true", reads={"/in": Output("w0", "/task/out")})
    rec = Recorder()
    with anyio.fail_after(60):
        outcome = await run_graph(
            graph_of(failing, *slow, after),
            kit.options,
            BatchOptions(jobs=3, fail_fast=True),
            rec.events(),
        )
    assert outcome.exit_status == Category.JOB_FAILED
    assert set(outcome.failed) == {"failing"}
    assert set(outcome.skipped) == {"w0", "w1", "w2", "after"}
    assert not processes_with(marker)
    for name in ("w0", "w1", "w2", "after"):
        assert rec.of(name)[-1] is NodeState.SKIPPED


async def test_rerun_runs_nothing(kit: Kit) -> None:
    a = kit.node("a", _append("a"), outputs=("/task/out",))
    b = kit.node("b", _append("b", "a"), reads=_reads("a"), outputs=("/task/out",))
    c = kit.node("c", _append("c", "a", "b"), reads=_reads("a", "b"))
    graph = graph_of(a, b, c)
    first = await run_graph(graph, kit.options, BatchOptions(jobs=2), Recorder().events())
    assert first.exit_status == 0
    rec = Recorder()
    second = await run_graph(graph, kit.options, BatchOptions(jobs=2), rec.events())
    assert second.exit_status == 0
    assert all(r.memo_hit for r in second.done.values())
    assert {n: r.record_json for n, r in second.done.items()} == {
        n: r.record_json for n, r in first.done.items()
    }
    assert rec.lines == {}
    for name in "abc":
        assert rec.of(name) == [NodeState.PENDING, NodeState.RUNNING, NodeState.MEMOIZED]


@pytest.mark.parametrize("seed", range(6))
async def test_cancelled_at_a_random_moment(kit: Kit, seed: int) -> None:
    """Cancelled anywhere (start-up, unpack, jobs, packing, teardown): nothing is left."""
    # Unique to this test: other sessions' tests sleep 0.3 too.
    marker = f"sleep 0.{seed + 2}4951"
    a = kit.node("a", f"{marker}; " + _append("a"), outputs=("/task/out",))
    mids = [
        kit.node(
            f"m{i}",
            f"{marker}; " + _append(f"m{i}", "a"),
            reads=_reads("a"),
            outputs=("/task/out",),
        )
        for i in range(4)
    ]
    last = kit.node(
        "z", _append("z", *(m.name for m in mids)), reads=_reads(*(m.name for m in mids))
    )
    rec = Recorder()
    delay = random.Random(seed).uniform(0.0, 2.0)
    with anyio.move_on_after(delay) as scope:
        await run_graph(graph_of(a, *mids, last), kit.options, BatchOptions(jobs=2), rec.events())
    assert not processes_with(marker)
    # The kit fixture checks mounts, netns, cgroups, work dirs and cache temps.
    for node in ("a", "m0", "m1", "m2", "m3", "z"):
        last = rec.of(node)[-1]
        assert last in FINAL, (node, rec.of(node))
        # Done means its record was reported; a cancel may land after that, in teardown.
        assert last is not NodeState.DONE or node in rec.records
        if not scope.cancelled_caught:
            assert last is NodeState.DONE


async def test_one_at_a_time_runs_the_graphs_order(kit: Kit) -> None:
    """-j 1: each ready step in the graph's order (the original's), on every backend."""
    z = kit.node("z", _append("z"), outputs=("/task/out",))
    m = kit.node("m", "true")
    b = kit.node("b", _append("b", "z"), reads=_reads("z"))
    a = kit.node("a", "true")
    rec = Recorder()
    graph = graph_of(z, m, b, a)
    outcome = await run_graph(graph, kit.options, BatchOptions(jobs=1), rec.events())
    assert outcome.exit_status == 0
    started = [n for n, s, _t in rec.states if s is NodeState.RUNNING]
    assert started == list(graph.order)


async def test_dead_runs_are_reclaimed_once_per_graph(kit: Kit) -> None:
    """What dead runs left is reclaimed once, before the first node; no node does it again."""
    from tests.run.test_batch import _dead_run_dir

    dead = _dead_run_dir(kit.state)
    nodes = [kit.node(f"n{i}", f"echo {i}") for i in range(3)]
    graph_log: list[str] = []
    events = Recorder().events()
    events.log = graph_log.append
    outcome = await run_graph(graph_of(*nodes), kit.options, BatchOptions(jobs=2), events)
    assert outcome.exit_status == 0 and set(outcome.done) == {"n0", "n1", "n2"}
    assert not dead.exists()
    assert [m for m in graph_log if "dead run" in m] == [
        f"removed the work dir of a dead run: {dead}"
    ]


async def test_a_read_output_is_already_a_shelf_for_its_readers(kit: Kit) -> None:
    """What a step packs and another reads goes into the cache as it is packed: the
    reader's input is a shelf already (here its fetch URL has nothing: it could not
    fetch), and that shelf is exactly what an unpack of the saved ware makes."""
    empty = kit.state.parent / "empty-warehouse"
    empty.mkdir()
    a = kit.node("a", _append("a"), outputs=("/task/out", "/task/unread"))
    b = kit.node("b", _append("b", "a"), reads=_reads("a"), outputs=("/task/out",))
    b = replace(b, fetch_urls={**b.fetch_urls, "/in/a": (f"ca+file://{empty}/",)})
    rec = Recorder()
    outcome = await run_graph(graph_of(a, b), kit.options, BatchOptions(jobs=2), rec.events())
    assert outcome.exit_status == 0 and set(outcome.done) == {"a", "b"}, outcome.failed
    assert b"".join(rec.lines["b"]) == b"a\nb\n"
    cache = Cache(kit.state)
    kept = WareID.parse(outcome.done["a"].results["/task/out"])
    # Only the output read by another step is kept; b's last one is not.
    assert {info.ware for info in cache.ls()} == {WareID.parse(kit.busybox.ware), kept}
    assert cache.verify() == []
    fresh = _unpack_saved(kit, kept, kit.state.parent / "fresh")
    assert hash_dir_exact(cache.layout.shelf(kept)) == fresh


def _unpack_saved(kit: Kit, ware: WareID, dest: Path) -> WareID:
    """The strict ID of what an unpack of ``ware`` from the warehouse makes (as the
    cache unpacks: lossless), re-hashed from the disk; the tree removed after."""
    with open(CAFileWarehouse(kit.warehouse).ware_path(ware), "rb") as stream:
        unpacked = unpack_stream(stream, dest, expected=ware, filters=UNPACK_LOSSLESS)
    try:
        assert hash_dir_exact(dest) == unpacked.strict_id
    finally:
        remove_tree(dest)
    return unpacked.strict_id


async def test_a_reader_starts_once_the_record_is_final_not_after_the_teardown(kit: Kit) -> None:
    """The next step starts as soon as the record of the one it reads is final (its
    outputs saved, its record stored): the teardown (the sandbox helper leaving,
    the work dir removed) goes on beside it."""
    a = kit.node("a", _append("a"), outputs=("/task/out",))
    b = kit.node("b", _append("b", "a"), reads=_reads("a"))
    seen: list[list[str]] = []
    rec = Recorder()
    events = rec.events()
    record_state = events.state

    def state(name: str, what: NodeState, seconds: float) -> None:
        record_state(name, what, seconds)
        if name == "b" and what is NodeState.RUNNING:
            seen.append(kit.work_dirs())

    events.state = state
    outcome = await run_graph(graph_of(a, b), kit.options, BatchOptions(jobs=1), events)
    assert outcome.exit_status == 0 and set(outcome.done) == {"a", "b"}
    # a's work dir was still there when b started (-j 1: b had a's place already).
    assert len(seen) == 1 and len(seen[0]) == 1
    assert rec.index("a", NodeState.DONE) < rec.index("b", NodeState.RUNNING)


async def test_an_output_that_is_not_saved_is_not_cached_either(kit: Kit) -> None:
    """The cache is a shortcut to what a reader could fetch, never the only copy: an
    output read by another step but saved nowhere stays out of it (the reader fails
    as it always did, finding the ware nowhere)."""
    a = replace(kit.node("a", _append("a"), outputs=("/task/out",)), save_urls={})
    b = kit.node("b", _append("b", "a"), reads=_reads("a"))
    outcome = await run_graph(graph_of(a, b), kit.options, BatchOptions(jobs=2), Recorder().events())
    assert set(outcome.done) == {"a"} and set(outcome.failed) == {"b"}
    failure = outcome.failed["b"]
    assert isinstance(failure, RepeatrError) and failure.category is Category.WARE_NOT_FOUND
    unsaved = WareID.parse(outcome.done["a"].results["/task/out"])
    assert unsaved not in {info.ware for info in Cache(kit.state).ls()}
