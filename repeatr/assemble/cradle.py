"""The cradle's filesystem steps and the usual system mounts.

compat.md "Defaults (the cradle)", as the original's ``TidyFilesystem``
(rio's ``MkdirUsable``): after the filesystem is assembled, the cwd and then
the home dir are made usable by the job's uid:gid (created if missing, with
missing parents, 0755, owned by uid:gid, mtime 2010-01-01; when they exist,
owned by uid:gid and given u+rwx, their existing parents o+x), and /tmp is
made 01777. Nothing at or under a host bind mount is touched (the planner
marks those steps). The defaults for the values themselves (uid 1000, cwd
/task, ...) belong to the formula model; this module only turns them into
steps.
"""

from __future__ import annotations

from repeatr.assemble.ops import CRADLE_MTIME, Dev, Mkdir, Proc


def cradle_steps(*, cwd: str, home: str, uid: int, gid: int) -> tuple[Mkdir, ...]:
    """The cradle's mkdir steps, in the original's order (duplicates removed)."""
    steps: list[Mkdir] = []
    for path in (cwd, home):
        if path not in (s.path for s in steps):
            steps.append(Mkdir(path, 0o755, uid, gid, CRADLE_MTIME))
    steps.append(Mkdir("/tmp", 0o1777, 0, 0, CRADLE_MTIME, usable=False))
    return tuple(steps)


def system_mounts() -> tuple[Proc, Dev]:
    """/proc and a minimal /dev, which every executor's job gets."""
    return (Proc("/proc"), Dev("/dev"))
