"""What a graph run shows: a live view of its steps on a terminal, else JSON events.

``graph_progress(out)`` gives a :class:`GraphProgress`, an async context
manager whose ``events`` go to ``run_graph``:

- ``--format json``: one JSON event per line on stdout, the shape ``repeatr
  run --format json`` uses, each naming its ``step``: ``{"event": "step",
  "step", "state", "seconds"}`` for every transition, ``output`` for each
  line of a job, ``result`` with the step's run record, ``log``;
- text, stderr a terminal: a live view on stderr, redrawn in place with ANSI
  escapes (~10 times a second): a line for each step as it ends (memoized,
  done, failed or skipped, with its time), the job's output lines prefixed
  with the step's name (as ``repeatr run`` prefixes them ``out|``), and at
  the bottom the steps running now, each with its time, and a summary;
- text, stderr not a terminal: the same JSON events, one per line on
  stderr (stdout stays for the command's result);
- ``--quiet``: only failures (and logs at warning level).

Events only record what happened; drawing happens on the ticker's beat, so a
fast graph does not pay a redraw per event.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from repeatr.cli.output import Format, Reporter
from repeatr.graph.model import GraphEvents, NodeState

if TYPE_CHECKING:
    import anyio.abc

#: Seconds between two redraws of the live view.
REDRAW_INTERVAL = 0.1

#: ANSI: move up N lines (``{}``), to the start of the line, erase to the end of the screen.
UP = "\x1b[{}A"
ERASE_DOWN = "\r\x1b[J"
RESET = "\x1b[0m"
#: How each final state is marked and coloured (SGR codes).
MARKS: dict[NodeState, tuple[str, str]] = {
    NodeState.DONE: ("✓", "32"),
    NodeState.MEMOIZED: ("≡", "36"),
    NodeState.FAILED: ("✗", "31"),
    NodeState.SKIPPED: ("-", "2"),
    NodeState.RUNNING: ("▸", "33"),
    NodeState.PENDING: ("·", "2"),
}
FINAL = frozenset({NodeState.DONE, NodeState.MEMOIZED, NodeState.FAILED, NodeState.SKIPPED})


class GraphProgress:
    """Shows one graph run (see the module docstring); ``events`` go to ``run_graph``."""

    def __init__(self, out: Reporter) -> None:
        self.out = out
        self.events = GraphEvents()

    async def __aenter__(self) -> GraphProgress:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


def graph_progress(out: Reporter) -> GraphProgress:
    """The progress for ``out``'s format and terminal."""
    if out.format is Format.JSON:
        return JsonProgress(out, out.stdout)
    if out.quiet:
        return QuietProgress(out)
    if out.stderr.isatty():
        return LiveView(out)
    return JsonProgress(out, out.stderr)


class JsonProgress(GraphProgress):
    """One JSON event per line on ``stream``, each naming its step."""

    def __init__(self, out: Reporter, stream: TextIO) -> None:
        super().__init__(out)
        self.stream = stream
        self.events = GraphEvents(
            state=lambda step, state, seconds: self._emit(
                "step", step=step, state=str(state), seconds=round(seconds, 3)
            ),
            record=lambda step, record: self._emit("result", step=step, record=json.loads(record)),
            output=lambda step, stream, line: self._emit(
                "output", step=step, stream=stream, line=line.decode("utf-8", "replace")
            ),
            log=lambda message: self._emit("log", level="info", message=message),
        )

    def _emit(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


class QuietProgress(GraphProgress):
    """``--quiet``: a failed step is named on stderr; nothing else."""

    def __init__(self, out: Reporter) -> None:
        super().__init__(out)

        def state(step: str, state: NodeState, seconds: float) -> None:
            if state is NodeState.FAILED:
                out.log(f"step {step} failed after {seconds:.2f} s", level="warning")

        self.events = GraphEvents(state=state)


@dataclass
class _Step:
    state: NodeState = NodeState.PENDING
    #: When it started running (monotonic), and how long it took once it ended.
    started: float = 0.0
    seconds: float = 0.0
    #: The job's exit code, once its record is known.
    exit_code: int | None = None


@dataclass
class _Screen:
    """What the live view knows, and the lines to print above the live region."""

    steps: dict[str, _Step] = field(default_factory=dict)
    #: Lines not printed yet: they go above the live region, once, for good.
    pending_lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    #: Lines of the live region now on screen (to move back up over them).
    drawn: int = 0


class LiveView(GraphProgress):
    """The live view on a terminal (stderr); redrawn by a ticker while the graph runs."""

    def __init__(self, out: Reporter, *, color: bool | None = None) -> None:
        super().__init__(out)
        self.stream = out.stderr
        self.color = color if color is not None else "NO_COLOR" not in os.environ
        self.screen = _Screen()
        self.width = 0
        self._stack = AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self.events = GraphEvents(
            state=self._state, record=self._record, output=self._output, log=self._log
        )

    async def __aenter__(self) -> LiveView:
        import anyio

        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._tg.start_soon(self._tick)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            # Only the ticker ran in it: whatever the graph raised goes on as it was.
            await self._stack.aclose()
        finally:
            self.draw(final=True)

    async def _tick(self) -> None:
        import anyio

        while True:
            self.draw()
            await anyio.sleep(REDRAW_INTERVAL)

    # --- events: recorded, drawn on the next beat

    def _state(self, step: str, state: NodeState, seconds: float) -> None:
        info = self.screen.steps.setdefault(step, _Step())
        info.state = state
        if state is NodeState.RUNNING:
            info.started = time.monotonic()
        elif state in FINAL:
            info.seconds = seconds
            self.screen.pending_lines.append(self._final_line(step, info))

    def _record(self, step: str, record_json: bytes) -> None:
        code = json.loads(record_json).get("exitCode")
        self.screen.steps.setdefault(step, _Step()).exit_code = code

    def _output(self, step: str, stream: str, line: bytes) -> None:
        bar = "|" if stream == "stdout" else "!"
        text = line.decode("utf-8", "replace").rstrip("\n")
        self.screen.pending_lines.append(f"{step}{bar} {text}")

    def _log(self, message: str) -> None:
        self.screen.pending_lines.append(f"repeatr: {message}")

    # --- drawing

    def _paint(self, text: str, sgr: str) -> str:
        return f"\x1b[{sgr}m{text}{RESET}" if self.color else text

    def _fit(self, text: str) -> str:
        """``text`` cut to the terminal's width (a wrapped line would break the redraw)."""
        return text if len(text) < self.width else text[: max(self.width - 2, 0)] + "…"

    def _name_width(self) -> int:
        return min(max((len(n) for n in self.screen.steps), default=0), 32)

    def _final_line(self, step: str, info: _Step) -> str:
        mark, _ = MARKS[info.state]
        line = f"{mark} {step:{self._name_width()}}  {info.state:8}"
        if info.state is not NodeState.SKIPPED:
            line += f"  {info.seconds:6.2f} s"
        if info.state is NodeState.FAILED and info.exit_code:
            line += f"  (exit {info.exit_code})"
        return line.rstrip()

    def live_lines(self, now: float) -> list[str]:
        """The region at the bottom: the steps running now, then a summary line."""
        counts = dict.fromkeys(NodeState, 0)
        running: list[tuple[str, _Step]] = []
        for name, info in self.screen.steps.items():
            counts[info.state] += 1
            if info.state is NodeState.RUNNING:
                running.append((name, info))
        height = _terminal_size(self.stream)[1]
        room = max(height - 3, 1)
        lines = [
            f"{MARKS[NodeState.RUNNING][0]} {name:{self._name_width()}}  running   "
            f"{now - info.started:6.2f} s"
            for name, info in running[:room]
        ]
        if len(running) > room:
            lines.append(f"  … and {len(running) - room} more running")
        ended = sum(counts[s] for s in FINAL)
        parts = ", ".join(f"{counts[s]} {s}" for s in NodeState if counts[s])
        lines.append(
            f"[{ended}/{len(self.screen.steps)}] {parts} · {now - self.screen.started:.1f} s"
        )
        return lines

    def draw(self, *, final: bool = False) -> None:
        """Move up over the live region, print what ended since, redraw the region.

        ``final``: the run is over: no live region is left, only a summary line.
        """
        self.width = _terminal_size(self.stream)[0]
        now = time.monotonic()
        chunks: list[str] = []
        # The cursor is at the end of the region's last line: up to its first.
        if self.screen.drawn > 1:
            chunks.append(UP.format(self.screen.drawn - 1))
        chunks.append(ERASE_DOWN)
        for line in self.screen.pending_lines:
            chunks.append(self._colored(self._fit(line)) + "\n")
        self.screen.pending_lines.clear()
        live = self.live_lines(now)
        if final:
            live = live[-1:]
        chunks.extend(self._fit(line) + "\n" for line in live[:-1])
        chunks.append(self._fit(live[-1]) + ("\n" if final else ""))
        self.screen.drawn = 0 if final else len(live)
        self.stream.write("".join(chunks))
        self.stream.flush()

    def _colored(self, line: str) -> str:
        for state, (mark, sgr) in MARKS.items():
            if line.startswith(mark + " ") and state in FINAL:
                return self._paint(line, sgr)
        return line


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """Columns and lines of the terminal ``stream`` writes to (80x24 if it cannot say)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24
