"""Shell completion: the generated bash script completes commands, subcommands and options."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import Repeatr


def _complete(script: Path, *words: str) -> list[str]:
    cword = len(words) - 1
    array = " ".join(f"'{w}'" for w in words)
    proc = subprocess.run(
        ["bash", "-c", f'source {script}; COMP_WORDS=({array}); COMP_CWORD={cword}; _repeatr; '
         'printf "%s\\n" "${COMPREPLY[@]}"'],
        capture_output=True, text=True, check=True,
    )
    return proc.stdout.split()


def test_bash_completion(repeatr: Repeatr, tmp_path: Path) -> None:
    res = repeatr("completion", "bash")
    assert res.code == 0
    script = tmp_path / "repeatr.bash"
    script.write_text(res.stdout)
    assert _complete(script, "repeatr", "un") == ["unpack"]
    assert set(_complete(script, "repeatr", "cache", "")) >= {"ls", "gc", "verify"}
    assert "--executor" in _complete(script, "repeatr", "run", "f.json", "--ex")
    assert "--max-size" in _complete(script, "repeatr", "cache", "gc", "--")


def test_zsh_completion_uses_bashcompinit(repeatr: Repeatr) -> None:
    res = repeatr("completion", "zsh")
    assert res.code == 0
    assert res.stdout.startswith("#compdef repeatr") and "bashcompinit" in res.stdout
    assert "complete -F _repeatr repeatr" in res.stdout
