"""The cradle's filesystem steps and the usual system mounts.

compat.md "Defaults (the cradle)": after the filesystem is assembled, the
cwd and home dir are created if missing (0755, owned by uid:gid, mtime
2010-01-01) and /tmp is made 01777. The defaults for the values themselves
(uid 1000, cwd /task, ...) belong to the formula model; this module only
turns them into steps.
"""

from __future__ import annotations

from repeatr.assemble.ops import CRADLE_MTIME, Dev, Mkdir, Proc


def cradle_steps(*, cwd: str, home: str, uid: int, gid: int) -> tuple[Mkdir, ...]:
    """The cradle's mkdir steps, in order (duplicates removed)."""
    steps: list[Mkdir] = [Mkdir("/tmp", 0o1777, 0, 0, CRADLE_MTIME, force_mode=True)]
    for path in (home, cwd):
        if path not in (s.path for s in steps) and path != "/":
            steps.append(Mkdir(path, 0o755, uid, gid, CRADLE_MTIME))
    return tuple(steps)


def system_mounts() -> tuple[Proc, Dev]:
    """/proc and a minimal /dev, which every executor's job gets."""
    return (Proc("/proc"), Dev("/dev"))
