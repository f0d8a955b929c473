"""A separate process for cache and lock tests: ``python -m tests.cache.worker JSON``.

The tests need real concurrency between processes (flock is per open file
description, so only separate processes show the real protocol). Commands,
given as one JSON object on the command line:

- ``{"cmd": "shelf", "root", "ware", "urls", "barrier"?, "hold"?}``: wait for
  the barrier (create ``<barrier>/ready.<pid>``, wait for ``<barrier>/go``),
  take the shelf; with ``hold``, create ``<hold>/held`` and keep the shelf
  until ``<hold>/release`` exists. Prints one JSON line: the handle, or the
  error's category.
- ``{"cmd": "lock", "path", "hold"}``: hold the exclusive lock on ``path``
  (same ``held``/``release`` handshake).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from repeatr import locks
from repeatr.cache import Cache
from repeatr.errors import RepeatrError
from repeatr.model.wareid import WareID


def _wait_for(path: Path, poll: float = 0.005) -> None:
    while not path.exists():
        time.sleep(poll)


def _hold(spec: dict[str, Any]) -> None:
    if spec.get("hold"):
        hold = Path(spec["hold"])
        (hold / "held").touch()
        _wait_for(hold / "release", 0.02)


def main(spec: dict[str, Any]) -> int:
    if spec["cmd"] == "lock":
        with locks.exclusive(Path(spec["path"]), resource="test resource", timeout=10):
            _hold(spec)
        return 0
    if spec.get("barrier"):
        barrier = Path(spec["barrier"])
        (barrier / f"ready.{os.getpid()}").touch()
        _wait_for(barrier / "go")
    cache = Cache(Path(spec["root"]), lock_timeout=spec.get("timeout", 120))
    try:
        with cache.shelf(WareID.parse(spec["ware"]), spec["urls"]) as handle:
            out = {
                "ok": True,
                "pid": os.getpid(),
                "unpacked": handle.unpacked,
                "path": str(handle.path),
                "strict": handle.record.strict,
            }
            print(json.dumps(out), flush=True)
            _hold(spec)
    except RepeatrError as exc:
        print(json.dumps({"ok": False, "category": int(exc.category), "message": str(exc)}))
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
