"""The job's ``oom_score_adj``: 0, whoever started ``repeatr run``.

``oom_score_adj`` is inherited through fork and execve: a job started by a
service with ``OOMScoreAdjust=-1000`` would be the one process the OOM
killer never picks, and a job without a memory limit would have the host's
other processes killed in its place. ``ns`` and ``chroot`` jobs get 0 from
the C child (``repeatr/linux/_jobstart.c``); the OCI runtimes and qemu from
:func:`default_oom_score`, called in the helper's child before it execs
one (crun 1.8.1 does not apply ``process.oomScoreAdj: 0``). Import-light:
it runs in the sandbox helper.
"""

from __future__ import annotations

import os


def default_oom_score() -> None:
    """Set this process's ``oom_score_adj`` to 0 (a value below 0 raised to it).

    Raising a value is always allowed; lowering one (to 0, from an
    invoker's positive value) is refused only when a privileged supervisor
    put the floor above 0: more killable, harmless, so that refusal is let be.
    """
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    except PermissionError:
        pass
    finally:
        os.close(fd)
