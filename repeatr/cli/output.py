"""What the CLI shows: results on stdout, logs and progress on stderr, or JSON events.

``--format text`` (default): the result (a ware ID, a run record) alone on
stdout so scripts can capture it; logs on stderr. ``--format json``: one JSON
object per line on stdout, each with an ``event`` of ``progress``, ``log``,
``result`` or ``error``.

Progress: in JSON mode, throttled ``progress`` events; in text mode, rich
progress bars on stderr, only when stderr is a terminal (nothing when piped,
so logs and scripts stay clean). Reporter methods may be called from worker
threads (an unpack reports progress from one): writes are serialised.
"""

from __future__ import annotations

import _thread
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TextIO

from repeatr.errors import RepeatrError


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"

    @classmethod
    def _missing_(cls, value: object) -> Format | None:
        # The original repeatr called its human-readable format "ansi" and rio
        # called it "dumb"; scripts written for them pass those names.
        return cls.TEXT if value in ALIASES else None


#: Other names for ``text``, accepted wherever ``--format`` is.
ALIASES = ("ansi", "dumb")


class Reporter:
    """One per invocation; passed to every command handler."""

    #: JSON progress events are throttled to at most one per phase per this many seconds.
    PROGRESS_INTERVAL = 0.2

    def __init__(
        self,
        fmt: Format = Format.TEXT,
        *,
        debug: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.format = fmt
        self.debug_enabled = debug
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._last_progress: dict[str, float] = {}
        self._lock = _thread.allocate_lock()  # threading.Lock, without importing threading
        self._bars: Any = None  # a rich Progress, created on first progress on a TTY
        self._tasks: dict[str, Any] = {}
        self.show_bars = fmt is Format.TEXT and not quiet and self.stderr.isatty()
        #: While a live view redraws stderr in place (a graph's), it prints
        #: every line above itself: a line written directly would break it.
        self.above: Callable[[str], None] | None = None

    def event(self, event: str, **fields: Any) -> None:
        """A JSON event (JSON mode only)."""
        self._emit(event, **fields)

    def _emit(self, event: str, **fields: Any) -> None:
        import json  # --format json only: a text run does without it

        with self._lock:
            self.stdout.write(json.dumps({"event": event, **fields}) + "\n")
            self.stdout.flush()

    def line(self, text: str) -> None:
        """One line on stderr (a log or the job's output), above any progress bars
        (or handed to the live view that owns the terminal meanwhile: ``above``)."""
        with self._lock:
            if self.above is not None:
                self.above(text)
            elif self._bars is not None:
                self._bars.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stderr.write(text + "\n")
                self.stderr.flush()

    def result(self, text: str, **data: Any) -> None:
        """The command's answer: ``text`` in text mode, a result event in JSON mode."""
        if self.format is Format.JSON:
            self._emit("result", **data)
        else:
            self.stdout.write(text if text.endswith("\n") else text + "\n")
            self.stdout.flush()

    def log(self, message: str, *, level: str = "info") -> None:
        if self.format is Format.JSON:
            self._emit("log", level=level, message=message)
        elif not self.quiet or level in ("warning", "error"):
            self.line(f"repeatr: {message}")

    def debug(self, message: str) -> None:
        if self.debug_enabled:
            self.log(message, level="debug")

    def progress(
        self, phase: str, done: int, total: int | None = None, *, final: bool = False
    ) -> None:
        """Bytes (or items) done in a phase such as ``fetch``, ``unpack`` or ``pack``."""
        if self.show_bars:
            self._bar(phase, done, total, final)
            return
        if self.format is not Format.JSON:
            return
        now = time.monotonic()
        if not final and now - self._last_progress.get(phase, 0.0) < self.PROGRESS_INTERVAL:
            return
        self._last_progress[phase] = now
        self._emit("progress", phase=phase, done=done, total=total)

    def _bar(self, phase: str, done: int, total: int | None, final: bool) -> None:
        with self._lock:
            if self._bars is None:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    SpinnerColumn,
                    TextColumn,
                    TransferSpeedColumn,
                )

                self._bars = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description:>8}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=Console(file=self.stderr),
                    transient=True,
                )
                self._bars.start()
            task = self._tasks.get(phase)
            if task is None:
                task = self._tasks[phase] = self._bars.add_task(phase, total=total)
            self._bars.update(task, completed=done, total=total, visible=not final)

    def close(self) -> None:
        """Stop progress bars (they are transient: nothing is left on screen)."""
        with self._lock:
            if self._bars is not None:
                self._bars.stop()
                self._bars = None
                self._tasks.clear()

    def error(self, err: RepeatrError) -> None:
        if self.format is Format.JSON:
            self._emit(
                "error",
                category=err.category.label,
                exitCode=err.exit_code,
                message=err.message,
                hint=err.hint,
            )
        else:
            self.close()
            label = f"{err.category.label}, exit {err.exit_code}"
            self.line(f"repeatr: error: {err} [{label}]")
