"""A formula given as bytes with a display name (a graph's node): no file is written."""

from __future__ import annotations

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.memo import MemoStore
from repeatr.runner.run import RunnerEvents, RunOptions, run

from .conftest import Runner

pytestmark = pytest.mark.root


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_bytes_run_then_memo_hit_by_bytes_and_by_file(runner: Runner) -> None:
    data = runner.formula("/bin/sh", "-c", "echo from bytes", name="unused.json").read_bytes()
    options = RunOptions(state=runner.state, executor="ns")
    lines: list[bytes] = []
    events = RunnerEvents(output=lambda _s, line: lines.append(line))
    first = await run("graph: step a", options, events, data=data)
    assert not first.memo_hit and first.exit_code == 0 and lines == [b"from bytes\n"]
    assert first.formula_file == "graph: step a"
    # The same bytes again: a hit, under the key a file with these bytes has.
    second = await run("graph: step a", options, data=data)
    assert second.memo_hit and second.record_json == first.record_json
    path = runner.dir / "same.json"
    path.write_bytes(data)
    _key, stored = MemoStore(runner.state).get_by_file(str(path), "ns")
    assert stored == first.record_json
    assert runner.work_dirs() == []


@pytest.mark.anyio
async def test_bad_bytes_are_reported_under_the_display_name(runner: Runner) -> None:
    options = RunOptions(state=runner.state, executor="ns")
    with pytest.raises(RepeatrError) as caught:
        await run("module.tl: step x", options, data=b'{"formula": {"bogus": 1}}')
    assert caught.value.category is Category.USAGE
    assert "module.tl: step x" in str(caught.value)
