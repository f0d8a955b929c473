"""The parent's side of the helper protocol without IO (``repeatr.executors.conversation``).

Frames in every order and every split, torn and garbage frames, wrong field
types, reported errors at each stage: each ends as the job's result or as one
of our errors, never another exception. Then the job's pipes (real pipes) and
one real run: the anyio driver delivers the job's last lines before packing.
"""

from __future__ import annotations

import itertools
import marshal
import os
import random
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import AssemblyError, Category, ExecutorError, JobInvalid, RepeatrError
from repeatr.executors.base import JobResult
from repeatr.executors.conversation import (
    MAX_LINE,
    Conversation,
    JobExited,
    JobPipes,
    Lines,
)
from repeatr.executors.protocol import (
    Assembled,
    Done,
    Error,
    Exit,
    JobLimits,
    JobNetwork,
    Message,
    Spec,
    Started,
)
from repeatr.executors.wire import encode
from tests.executors.conftest import Jobs, usable

SPEC = Spec(
    mode="ns", root="/w/root", mounts=[], cradle=[], argv=["sh", "-c", "true"], env=[],
    capabilities=[], network=JobNetwork(), limits=JobLimits(), rw="/w/rw", cgroup="repeatr-1-a",
    outputs=[], mountpoints=[],
)
ASSEMBLED, STARTED = Assembled(pid=10), Started(pid=11)
EXIT = Exit(code=3, signal=None)
REPORTS = [ASSEMBLED, STARTED, EXIT]


def _started(argv: tuple[str, ...] = ("sh", "-c", "true")) -> Conversation:
    conv = Conversation(argv, helper_pid=10)
    assert decode_frame(conv.start(SPEC, now=100.0)) == SPEC
    return conv


def decode_frame(frame: bytes) -> Message:
    from repeatr.executors.wire import decode, frame_length

    assert frame_length(frame[:4]) == len(frame) - 4
    return decode(frame[4:])


def _feed(conv: Conversation, data: bytes, sizes: list[int], now: float = 100.0) -> list[Any]:
    events: list[Any] = []
    i = 0
    for n in sizes:
        events += conv.receive(data[i : i + n], now=now)
        i += n
    events += conv.receive(data[i:], now=now) if data[i:] else []
    return events


def _splits(n: int, rng: random.Random) -> list[list[int]]:
    """Ways to cut ``n`` bytes: whole, byte by byte, random cuts."""
    ways = [[n], [1] * n]
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, 6))))
        ways.append([b - a for a, b in itertools.pairwise([0, *cuts, n])])
    return ways


def test_a_job_that_ran_in_any_split_of_the_bytes() -> None:
    data = b"".join(encode(m) for m in REPORTS)
    for sizes in _splits(len(data), random.Random(7)):
        conv = _started()
        events = _feed(conv, data, sizes, now=102.5)
        assert events == [ASSEMBLED, STARTED, JobExited(JobResult(3, None, 2.5))]
        assert conv.over and conv.job_pid == 11
        assert decode_frame(conv.done()) == Done()
        assert conv.outcome() == JobResult(3, None, 2.5)
        assert conv.receive(b"more after the last report") == []  # not read


def test_duration_counts_from_sending_the_spec() -> None:
    conv = Conversation(("true",))
    conv.start(SPEC, now=50.0)
    events = conv.receive(b"".join(encode(m) for m in REPORTS), now=53.0)
    assert events[-1] == JobExited(JobResult(3, None, 3.0))


def test_exit_fields_reach_the_result() -> None:
    conv = _started()
    ex = Exit(code=137, signal=9, timed_out=True, oom=True, disk="limit")
    (*_, exited) = conv.receive(b"".join(encode(m) for m in (ASSEMBLED, STARTED, ex)), now=101)
    assert exited == JobExited(JobResult(137, 9, 1.0, timed_out=True, oom_killed=True, disk="limit"))


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize(
    ("category", "error"),
    [
        (Category.ASSEMBLY_INVALID.name, AssemblyError),
        (Category.JOB_INVALID.name, JobInvalid),
        (Category.EXECUTOR.name, ExecutorError),
        ("SOMETHING_NEW", ExecutorError),
    ],
)
def test_a_reported_error_at_any_stage_is_ours(
    stage: int, category: str, error: type[RepeatrError]
) -> None:
    reported = Error(category=category, message="no", hint="try", traceback="tb")
    data = b"".join(encode(m) for m in (*REPORTS[:stage], reported, EXIT))
    for sizes in _splits(len(data), random.Random(stage)):
        conv = _started(("/bin/x", "a" * 5000))
        events = _feed(conv, data, sizes)
        assert events == [*REPORTS[:stage], reported]  # nothing read after it
        assert conv.over and conv.result is None
        with pytest.raises(RuntimeError):
            conv.done()  # Done answers an exit only
        with pytest.raises(error) as info:
            conv.outcome()
        assert type(info.value) is error and info.value.hint == "try"
        assert info.value.args[0].endswith("\ntb")
        if error is JobInvalid:  # the command, its long argument cut
            assert "(command: /bin/x 'aaaa" in str(info.value)
            assert "[5000 characters]" in str(info.value)


@pytest.mark.parametrize(
    "order",
    [
        [STARTED],
        [EXIT],  # exit before anything
        [ASSEMBLED, EXIT],  # exit before Started
        [ASSEMBLED, ASSEMBLED],
        [ASSEMBLED, STARTED, STARTED],
        [Done()],
        [SPEC],
        [ASSEMBLED, JobNetwork()],
    ],
)
def test_reports_out_of_order_are_a_protocol_error(order: list[Message]) -> None:
    data = b"".join(encode(m) for m in order)
    for sizes in _splits(len(data), random.Random(3)):
        conv = _started()
        with pytest.raises(ExecutorError, match="sandbox helper protocol: got"):
            _feed(conv, data, sizes)


@pytest.mark.parametrize("prefix", [[], [ASSEMBLED], [ASSEMBLED, STARTED]])
def test_an_end_before_the_last_report(prefix: list[Message]) -> None:
    whole = b"".join(encode(m) for m in prefix)
    torn = encode(EXIT)[:-3]
    for data in (whole, whole + torn, whole + torn[:2]):
        conv = _started()
        if data:
            conv.receive(data)
        with pytest.raises(ExecutorError, match=r"helper \(pid 10\) exited without a report"):
            conv.receive(b"")
        assert not conv.over


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"$": "done"}
    for _ in range(depth):
        inner = {"$": "exit", "code": inner, "signal": None}
    return inner


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"not marshal at all",
        marshal.dumps([1, 2]),
        marshal.dumps({"$": [1]}),  # an unhashable tag
        marshal.dumps({"$": "assembled", 1: 2}),  # a key not a string
        marshal.dumps({"$": "assembled", "pid": 1, "x": {"$": {}}}),
        marshal.dumps(_nested(1900)),  # past the recursion limit
        marshal.dumps({"$": "nonesuch"}),
        marshal.dumps({"$": "assembled"}),  # a field missing
        marshal.dumps({"$": "assembled", "pid": "ten"}),  # a field of the wrong type
        marshal.dumps({"$": "error", "category": 1, "message": "m"}),
        marshal.dumps({"$": "error", "category": "x", "message": "m", "hint": {"$": "done"}}),
        marshal.dumps((lambda: 0).__code__),
        b"(\xff\xff\xff\x7f",  # a tuple of 2**31 - 1 items, in 5 bytes: not allocated
        b"[\x00\x00\x00\x10N",
        marshal.dumps({"$": "done"}) + b"N",  # more after the object
    ],
)
def test_a_garbage_frame_is_a_protocol_error(payload: bytes) -> None:
    conv = _started()
    with pytest.raises(ExecutorError, match="sandbox helper protocol"):
        conv.receive(_frame(payload))


@pytest.mark.parametrize(
    "fields",
    [
        {"code": "3", "signal": None},
        {"code": 3, "signal": "9"},
        {"code": 3, "signal": None, "timed_out": 1},
        {"code": 3, "signal": None, "disk": None},
        {"code": None, "signal": None},
    ],
)
def test_an_exit_of_the_wrong_types(fields: dict[str, object]) -> None:
    conv = _started()
    conv.receive(encode(ASSEMBLED) + encode(STARTED))
    with pytest.raises(ExecutorError, match="sandbox helper protocol: exit"):
        conv.receive(_frame(marshal.dumps({"$": "exit", **fields})))


def test_random_bytes_end_only_in_our_errors() -> None:
    rng = random.Random(1414)
    good = b"".join(encode(m) for m in REPORTS)
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        conv = _started()
        try:
            conv.receive(bytes(data))
            conv.receive(b"")
        except ExecutorError:
            pass


def test_a_frame_longer_than_the_limit() -> None:
    conv = _started()
    with pytest.raises(ExecutorError, match="too long"):
        conv.receive((1 << 30).to_bytes(4, "big"))


def test_misuse_is_a_programming_error() -> None:
    conv = Conversation(("true",))
    with pytest.raises(RuntimeError):
        conv.receive(encode(ASSEMBLED))
    conv.start(SPEC)
    with pytest.raises(RuntimeError):
        conv.start(SPEC)
    conv.receive(b"".join(encode(m) for m in REPORTS))
    with pytest.raises(RuntimeError):
        conv.outcome()  # before Done


def test_lines() -> None:
    lines = Lines()
    assert lines.feed(b"a\nb") == [b"a\n"]
    assert lines.feed(b"c\n\nd") == [b"bc\n", b"\n"]
    assert lines.end() == [b"d"]
    assert lines.end() == []
    long = b"x" * (MAX_LINE + 5)
    assert lines.feed(long) == [long]
    assert lines.feed(b"y" * 10) == []
    assert lines.feed(b"\n") == [b"y" * 10 + b"\n"]


def test_job_pipes_deliver_lines_then_the_end() -> None:
    pipes = JobPipes()
    try:
        stdin, out_w, err_w = (os.dup(fd) for fd in pipes.child_fds())
        pipes.forked()
        out, err = pipes.fds
        assert pipes.read(out) == []  # nothing yet: never blocks
        os.write(out_w, b"one\ntw")
        os.write(err_w, b"e\n")
        assert pipes.read(out) == [("stdout", b"one\n")]
        assert pipes.drain(err) == [("stderr", b"e\n")]
        os.write(out_w, b"o\n" + b"z" * 65000)  # within the pipe's 64 KiB
        assert pipes.drain(out) == [("stdout", b"two\n")]
        os.write(out_w, b"\nlast")
        assert pipes.drain(out) == [("stdout", b"z" * 65000 + b"\n")]
        for fd in (stdin, out_w, err_w):
            os.close(fd)
        assert pipes.read(out) == [("stdout", b"last")] and out not in pipes.open
        assert pipes.read(err) == [] and pipes.open == set()
    finally:
        pipes.close()


# --- the anyio driver, for real ---------------------------------------------------------


@pytest.mark.root
@pytest.mark.anyio
async def test_the_last_lines_come_before_the_outputs_are_packed(
    area: Any, workdir: Path
) -> None:
    """``on_finished`` sees every line the job wrote (the pumps no longer race the exit)."""
    jobs = Jobs(area, workdir, usable("ns"))
    lines: list[tuple[str, bytes]] = []
    seen_at_exit: list[int] = []

    async def on_output(stream: str, line: bytes) -> None:
        lines.append((stream, line))

    async def on_finished(result: JobResult, view: Path) -> None:
        seen_at_exit.append(len(lines))

    # Enough at the very end that a pump is still reading when Exit arrives.
    script = "i=0; while [ $i -lt 3000 ]; do echo line$i; echo err$i >&2; i=$((i+1)); done"
    for _ in range(5):
        lines.clear()
        seen_at_exit.clear()
        result = await jobs.executor.run(
            jobs.job("sh", "-c", script), on_output=on_output, on_finished=on_finished
        )
        assert result.exit_code == 0
        assert len(lines) == 6000 and seen_at_exit == [6000]
        assert [b for s, b in lines if s == "stdout"] == [b"line%d\n" % i for i in range(3000)]


def test_a_frame_cannot_make_the_parent_allocate_what_it_does_not_hold() -> None:
    """marshal allocates a tuple or list of the count it reads before its items."""
    import tracemalloc

    from repeatr.executors.wire import decode

    tracemalloc.start()
    try:
        for bomb in (b"(\x00\x00\x00\x08", b"[\x00\x00\x00\x08N", b"{\xda\x01$(\x00\x00\x00\x04"):
            with pytest.raises(ValueError):
                decode(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
