"""What a graph run shows: the live view on a real pty, JSON events otherwise."""

from __future__ import annotations

import io
import json
import os
import re
import termios

import anyio
import anyio.to_thread
import pytest

from repeatr.cli.graph_progress import JsonProgress, LiveView, graph_progress
from repeatr.cli.output import Format, Reporter
from repeatr.graph.local import run_graph
from repeatr.graph.model import Graph, Output
from repeatr.runner.batch import BatchOptions

from .conftest import Kit, graph_of

pytestmark = [pytest.mark.root, pytest.mark.anyio]

CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def screen(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw`` (cursor up, carriage return, erase down; SGR dropped)."""
    lines = [""]
    row = col = 0
    pos = 0
    while pos < len(raw):
        if m := CSI.match(raw, pos):
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "A":
                row = max(row - n, 0)
            elif op == "J":
                del lines[row + 1 :]
                lines[row] = lines[row][:col]
            pos = m.end()
            continue
        ch = raw[pos]
        pos += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1 :]
            col += 1
    return [line for line in lines if line]


def _text_file(fd: int) -> io.TextIOWrapper:
    """``fd`` as a text file (closing it closes ``fd``); opening a fd does not block."""
    return open(fd, "w", encoding="utf-8")


def _graph(kit: Kit) -> Graph:
    a = kit.node("a", "sleep 0.3; echo hello; mkdir -p /task/out; echo x > /task/out/x", outputs=("/task/out",))
    b = kit.node("b", "exit 3", reads={"/in": Output("a", "/task/out")}, outputs=("/task/out",))
    c = kit.node("c", "true", reads={"/in": Output("b", "/task/out")})
    d = kit.node("slow-step", "sleep 0.8")
    return graph_of(a, b, c, d)


async def test_live_view_on_a_terminal(kit: Kit) -> None:
    master, slave = os.openpty()
    termios.tcsetwinsize(slave, (30, 100))
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the slave side is closed
                return
            if not data:
                return
            chunks.append(data)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, read_all)
            with _text_file(slave) as tty:
                out = Reporter(stderr=tty, stdout=io.StringIO())
                progress = graph_progress(out)
                assert isinstance(progress, LiveView)
                async with progress:
                    outcome = await run_graph(_graph(kit), kit.options, BatchOptions(jobs=2), progress.events)
    finally:
        os.close(master)
    assert outcome.skipped == ("c",)
    raw = b"".join(chunks).decode()
    # Redrawn in place: the cursor went back up over the running steps.
    assert re.search(r"\x1b\[[1-9]\d*A", raw)
    assert "running" in raw
    shown = screen(raw)
    text = "\n".join(shown)
    assert re.search(r"^✓ a +done +\d+\.\d\d s$", text, re.M), text
    assert re.search(r"^✗ b +failed +\d+\.\d\d s  \(exit 3\)$", text, re.M), text
    assert re.search(r"^- c +skipped$", text, re.M), text
    assert re.search(r"^✓ slow-step +done +\d+\.\d\d s$", text, re.M), text
    assert "a| hello" in shown
    # The live region is gone: only the summary is left at the bottom.
    assert shown[-1].startswith("[4/4] ") and "1 failed" in shown[-1] and "1 skipped" in shown[-1]
    assert not any(" running " in line for line in shown)


@pytest.mark.parametrize("fmt", ["json", "text-piped"])
async def test_json_events_name_the_step(kit: Kit, fmt: str) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Reporter(Format.JSON if fmt == "json" else Format.TEXT, stdout=stdout, stderr=stderr)
    progress = graph_progress(out)
    assert isinstance(progress, JsonProgress)
    async with progress:
        await run_graph(_graph(kit), kit.options, BatchOptions(jobs=2), progress.events)
    stream = stdout if fmt == "json" else stderr
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (stderr if fmt == "json" else stdout).getvalue() == ""
    states: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "step":
            states.setdefault(e["step"], []).append(e["state"])
    assert states == {
        "a": ["pending", "running", "done"],
        "b": ["pending", "running", "failed"],
        "c": ["pending", "skipped"],
        "slow-step": ["pending", "running", "done"],
    }
    results = {e["step"]: e["record"]["exitCode"] for e in events if e["event"] == "result"}
    assert results == {"a": 0, "b": 3, "slow-step": 0}
    assert {"event": "output", "step": "a", "stream": "stdout", "line": "hello\n"} in events
