"""One bash process per doc page, so that commands share state (cd, variables) as they would
in a reader's terminal. Each command's stdout and stderr are read together, in order."""

from __future__ import annotations

import os
import select
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType


class Shell:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self._marker = f"__docs_done_{uuid.uuid4().hex}__"
        self._proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._buf = b""
        self.run("set -o pipefail", timeout=10)

    def run(self, command: str, *, timeout: float) -> tuple[int, str]:
        """Run ``command`` (stdin from /dev/null); its exit status and its output."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        script = f"{{\n{command}\n}} </dev/null 2>&1\nprintf '\\n%s %d\\n' {self._marker} $?\n"
        self._proc.stdin.write(script.encode())
        self._proc.stdin.flush()
        deadline = time.monotonic() + timeout
        needle = f"\n{self._marker} ".encode()
        fd = self._proc.stdout.fileno()
        while needle not in self._buf or not self._buf.split(needle, 1)[1].count(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"the shell exited ({self._proc.wait()})")
                self._buf += chunk
        out, rest = self._buf.split(needle, 1)
        status, self._buf = rest.split(b"\n", 1)
        return int(status), out.decode("utf-8", "replace")

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Shell:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
