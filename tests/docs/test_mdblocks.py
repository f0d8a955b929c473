"""The doc-block reader and the output matcher that the page tests rely on."""

from __future__ import annotations

from pathlib import Path

from .mdblocks import Bindings, console_commands, looks_like_commands, parse_page

PAGE = """\
# A page
<!-- setup: wares rootfs -->

<!-- file: f.json -->
```json
{"a": 1}
```

<!-- not run: needs a registry -->
```console
$ skopeo copy docker://x oci:x
```

```console
$ cat > x.txt <<'EOF'
$ not a command
EOF
$ echo one \\
    two
one two
$ true
```

```
repeatr run x.json
```
"""

RECORD = [
    "{",
    '\t"guid": "n89dk9cd-yob0011x-n4ry3dvr",',
    '\t"time": 1795612550,',
    '\t"formulaID": "7GqhidTMZvr1icsy3s9kQqcGZzBU9JhKQQoMXEnQ2uRKLnzZBVpvk2iB3nwAeFBVEL",',
    "}",
]


def record(guid: str, fid: str = "8" * 64, time: int = 5) -> str:
    return f'{{\n\t"guid": "{guid}",\n\t"time": {time},\n\t"formulaID": "{fid}",\n}}\n'


def test_blocks_and_markers(tmp_path: Path) -> None:
    path = tmp_path / "p.md"
    path.write_text(PAGE)
    page = parse_page(path)
    assert page.setup == ["wares", "rootfs"]
    langs = [(b.lang, b.file, b.not_run) for b in page.blocks]
    assert langs == [
        ("json", "f.json", None),
        ("console", None, "needs a registry"),
        ("console", None, None),
        ("", None, None),
    ]
    cmds = console_commands(page.blocks[2])
    assert [c.text for c in cmds] == [
        "cat > x.txt <<'EOF'\n$ not a command\nEOF",
        "echo one \\\n    two",
        "true",
    ]
    assert [c.expected for c in cmds] == [[], ["one two"], []]
    assert cmds[1].line == 18
    assert looks_like_commands(page.blocks[3])
    assert not looks_like_commands(page.blocks[1])


def test_literal_lines_and_wildcards() -> None:
    b = Bindings()
    assert b.match(["a ... c", "...", "end"], "a bbb c\nx\ny\nend\n") is None
    assert b.match(["a ... c", "...", "end"], "a bbb c\nend") is None
    assert b.match(["a"], "b\n") == "output differs"
    assert b.match(["a"], "a\nextra\n") == "output differs"
    assert b.match([], "") is None
    assert b.match([], "noise\n") == "expected no output"


def test_guids_and_formula_ids_are_variables_bound_across_commands() -> None:
    b = Bindings()
    g1 = "aaaaaaaa-bbbbbbbb-cccccccc"
    assert b.match(RECORD, record(g1)) is None
    # The same doc guid later must be the same value (a memo hit) ...
    assert b.match(RECORD, record(g1, time=9)) is None
    assert b.match(RECORD, record("dddddddd-bbbbbbbb-cccccccc")) == "output differs"
    # ... and a new doc guid must be a new value.
    fresh = [line.replace("n89dk9cd-yob0011x-n4ry3dvr", "n89dkdzz-vvxyotvg-2gxdxnow") for line in RECORD]
    why = b.match(fresh, record(g1))
    assert why is not None and "again" in why
    assert b.match(fresh, record("eeeeeeee-bbbbbbbb-cccccccc")) is None
