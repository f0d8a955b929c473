"""What the runner reports, shown by a ``Reporter``: shared by run, check and twerk."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repeatr.cli.output import Format, Reporter

if TYPE_CHECKING:
    from repeatr.runner.run import RunnerEvents


def runner_events(out: Reporter, file: str | None = None) -> RunnerEvents:
    """The job's lines prefixed on stderr (or JSON events), logs, warnings, progress.

    ``file``: in a batch, the formula file each line is about (its lines are
    prefixed with it, its JSON events name it). The record is not printed
    here: the command decides when and how.
    """
    from repeatr.runner.run import RunnerEvents

    tag = f"{file}: " if file is not None else ""
    named = {"file": file} if file is not None else {}

    def output(stream: str, line: bytes) -> None:
        if out.format is Format.JSON:
            out.event("output", **named, stream=stream, line=line.decode("utf-8", "replace"))
        elif not out.quiet:
            out.close()  # the job is running: fetch progress is over
            prefix = "out| " if stream == "stdout" else "err| "
            out.line(tag + prefix + line.decode("utf-8", "replace").rstrip("\n"))

    def log(message: str) -> None:
        out.log(tag + message)

    def warn(message: str) -> None:
        out.log(tag + message, level="warning")

    def debug(message: str) -> None:
        out.debug(tag + message)

    events = RunnerEvents(
        log=log,
        warn=warn,
        output=output,
        progress=lambda phase, done: out.progress(phase, done),
    )
    if out.debug_enabled:  # left out otherwise: the runner then builds no debug lines
        events.debug = debug
    return events


def print_record(out: Reporter, record_json: bytes, file: str | None = None) -> None:
    """A run's record on stdout: as it is stored (text), or in a result event (json)."""
    if out.format is Format.JSON:
        import json

        named = {"file": file} if file is not None else {}
        out.result("", **named, record=json.loads(record_json))
    else:
        text = record_json.decode()
        out.stdout.write(text if file is None else f"{file}\n{text}")
        out.stdout.flush()
