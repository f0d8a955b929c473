"""Run repeatr as an unprivileged user, wherever the checkout lives.

A checkout may sit where other users cannot read it: under ``/root``, or in
a ``mktemp -d`` directory (mode 0700). A process that dropped root to
``nobody`` cannot import repeatr or its dependencies from there. So the
command runs in a private mount namespace of its own (``unshare --mount``)
where the package directory and the dependencies' ``site-packages`` are
bind-mounted into a world-readable temporary directory, and only then drops
to ``nobody`` (``setpriv``). The binds die with that namespace: nothing
changes on the host, and nothing is copied.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import repeatr

NOBODY = 65534

# Bind each SOURCE onto its TARGET (argument pairs until "--"), then drop to nobody.
_BIND_THEN_DROP = f"""
while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done
shift
exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "$@"
"""


def run_as_nobody(
    args: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m repeatr ARGS`` as uid/gid 65534, from code that user can read."""
    package = Path(repeatr.__file__).resolve().parent
    libs = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    # The interpreter itself (a venv's python is a symlink into the checkout's .venv).
    python = os.path.realpath(sys.executable)
    with tempfile.TemporaryDirectory(prefix="repeatr-nobody.") as tmp:
        os.chmod(tmp, 0o755)
        binds: list[str] = []
        code = Path(tmp, "code")
        (code / package.name).mkdir(parents=True)
        binds += [os.fspath(package), os.fspath(code / package.name)]
        path = [os.fspath(code)]
        for i, lib in enumerate(libs):
            target = Path(tmp, f"lib{i}")
            target.mkdir()
            binds += [lib, os.fspath(target)]
            path.append(os.fspath(target))
        argv = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", _BIND_THEN_DROP, "sh", *binds, "--",
            python, "-m", "repeatr", *args,
        ]  # fmt: skip
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=timeout,
            check=False,
            env={**(env or os.environ), "PYTHONPATH": os.pathsep.join(path)},
        )
