"""Code blocks of the doc pages, read the way the doc tests run them.

The conventions (also in docs/index.md's source, for doc writers):

- A ```` ```console ```` block is a terminal session: a line starting ``$ ``
  is a command (continued by a trailing ``\\`` or by the body of a heredoc);
  the lines after it, up to the next ``$ ``, are its expected output
  (stdout and stderr together, as a terminal shows them). A command shown
  with no output must print nothing.
- A ```` ```sh ```` (or ``bash``, ``shell``) block is a script: it is run
  and must exit 0; its output is not compared.
- Every other block (``json``, ``text``, no language, ...) is not run, except
  that ``<!-- file: NAME -->`` on the line before a block writes the block to
  NAME (relative to the page's scratch dir) before the next command runs.
- ``<!-- not run: REASON -->`` on the line before a block skips it; the tests
  count and list the reasons.
- ``<!-- setup: KEYWORD ... -->`` anywhere on a page asks for a prepared
  scratch dir (see ``tests/docs/conftest.py``: ``oci-layout``, ``rootfs``,
  ``wares``).

Expected output may use:

- ``...`` within a line: any text (possibly none);
- a line holding only ``...``: any number of lines (possibly none);
- run guids, and formula IDs in a run record (``"formulaID": "..."``), as
  *variables*: the doc's value stands for whatever the command printed,
  consistently across the page (the same value in the doc must be the same
  value printed, different values different). A bare hash elsewhere is a
  variable only if the page bound it before; otherwise it is literal;
- ``"time": N`` and ``YYYY-MM-DD HH:MM:SS`` timestamps match any value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUN_LANGS = frozenset({"sh", "bash", "shell"})
CONSOLE = "console"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARK = re.compile(r"^\s*<!--\s*(?P<key>not run|file|setup)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(?P<word>[A-Za-z_][A-Za-z_0-9]*)\1")


@dataclass(frozen=True)
class Command:
    text: str  # what is sent to the shell (possibly several lines)
    expected: list[str]  # the lines shown after it
    line: int  # 1-based line of the page where the command starts


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # 1-based line of the opening fence
    not_run: str | None = None  # the reason, when marked
    file: str | None = None  # write the block to this path


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def parse_page(path: Path) -> Page:
    """Every fenced block of a Markdown page, with the marker before it."""
    lines = path.read_text().splitlines()
    page = Page(path)
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        text = lines[i]
        mark = _MARK.match(text)
        if mark:
            key, value = mark["key"], mark["value"]
            if key == "setup":
                page.setup.extend(value.split())
            else:
                pending[key] = value
            i += 1
            continue
        fence = _FENCE.match(text)
        if not fence:
            if text.strip():
                pending.clear()  # a marker applies to the block right after it
            i += 1
            continue
        opener, start = fence["fence"], i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(opener):
            body.append(lines[i][len(fence["indent"]):] if fence["indent"] else lines[i])
            i += 1
        i += 1  # the closing fence
        page.blocks.append(
            Block(
                lang=fence["lang"].lower(),
                body="\n".join(body) + "\n",
                line=start + 1,
                not_run=pending.get("not run"),
                file=pending.get("file"),
            )
        )
        pending.clear()
    return page


def console_commands(block: Block) -> list[Command]:
    """The commands of a console block and the output shown after each."""
    lines = block.body.splitlines()
    commands: list[Command] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            raise ValueError(
                f"line {block.line + 1 + i}: console block: output before any '$ ' command"
            )
        start = i
        cmd = [lines[i][2:]]
        i += 1
        while cmd[-1].endswith("\\") and i < len(lines):
            cmd.append(lines[i])
            i += 1
        for word in [m["word"] for m in _HEREDOC.finditer("\n".join(cmd))]:
            while i < len(lines) and lines[i] != word:
                cmd.append(lines[i])
                i += 1
            if i < len(lines):
                cmd.append(lines[i])
                i += 1
        out: list[str] = []
        while i < len(lines) and not lines[i].startswith("$ "):
            out.append(lines[i])
            i += 1
        while out and not out[-1].strip():
            out.pop()
        commands.append(Command("\n".join(cmd), out, block.line + 1 + start))
    return commands


# ---- matching expected output -------------------------------------------------------

_GUID = r"[0-9a-z]{8}-[0-9a-z]{8}-[0-9a-z]{8}"
_B58 = r"[1-9A-HJ-NP-Za-km-z]"
_TOKENS = re.compile(
    rf"(?P<wild>\.\.\.)"
    rf"|(?P<guid>(?<![\w-]){_GUID}(?![\w-]))"
    rf"|(?P<fid>(?<![\w:/]){_B58}{{60,70}}(?![\w]))"
    r'|(?P<time>(?<="time": )\d+)'
    r"|(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)"
)


class Bindings:
    """Variables (guids, formula IDs) bound so far on one page: doc value -> actual value."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def pattern(self, expected: list[str]) -> tuple[re.Pattern[str], dict[str, str]]:
        """A regex for the whole output; the second value maps group names to doc values."""
        groups: dict[str, str] = {}  # group name -> doc value
        first: dict[str, str] = {}  # doc value -> group name, within this output
        parts: list[str] = []
        for line in expected:
            if line.strip() == "...":
                parts.append(r"(?:[^\n]*\n)*?")
                continue
            pos, rx = 0, []
            for m in _TOKENS.finditer(line):
                rx.append(re.escape(line[pos:m.start()]))
                pos = m.end()
                kind, value = m.lastgroup, m.group()
                if kind == "wild":
                    rx.append(r"[^\n]*?")
                elif kind in ("time",):
                    rx.append(r"\d+")
                elif kind == "stamp":
                    rx.append(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
                elif kind == "fid" and not (
                    line[: m.start()].endswith('"formulaID": "')
                    or value in self.values
                    or value in first
                ):
                    rx.append(re.escape(value))  # a literal hash: checked exactly
                elif value in self.values:
                    rx.append(re.escape(self.values[value]))
                elif value in first:
                    rx.append(f"(?P={first[value]})")
                else:
                    name = first[value] = f"v{len(groups)}"
                    groups[name] = value
                    rx.append(f"(?P<{name}>{_GUID if kind == 'guid' else _B58 + '{40,80}'})")
            rx.append(re.escape(line[pos:]))
            parts.append("".join(rx) + r"[ \t]*\n")
        return re.compile("".join(parts)), groups

    def match(self, expected: list[str], actual: str) -> str | None:
        """None if ``actual`` is what ``expected`` shows (and bind its variables), else why not."""
        text = "".join(line.rstrip() + "\n" for line in actual.rstrip("\n").splitlines())
        if not expected:
            return None if not text.strip() else "expected no output"
        rx, groups = self.pattern(expected)
        m = rx.fullmatch(text)
        if m is None:
            return "output differs"
        taken = {v: k for k, v in self.values.items()}
        for name, doc_value in groups.items():
            got = m.group(name)
            if got in taken and taken[got] != doc_value:
                return f"{doc_value} stands for a new value, but it printed {got} again (shown as {taken[got]})"
            self.values[doc_value] = got
            taken[got] = doc_value
        return None


def looks_like_commands(block: Block) -> bool:
    """A block that is not run but holds shell commands (so they would go untested)."""
    if block.lang in RUN_LANGS or block.lang == CONSOLE or block.not_run is not None:
        return False
    return any(
        line.startswith(("$ ", "repeatr ", "sudo ", "skopeo ", "docker ", "mkdir "))
        for line in block.body.splitlines()
    )
