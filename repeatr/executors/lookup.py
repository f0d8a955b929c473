"""The job's exec, looked up inside the container root: one lookup for every mode.

``ns`` and ``chroot`` look it up in the job itself, after pivot_root, as the
job's user (the root is then ``/``); ``oci`` in the helper, before the
runtime starts (runc and crun would report a missing exec as their own
failure, not our JobInvalid). Both go through ``find_exec``: every path is
resolved with RESOLVE_IN_ROOT on a descriptor of the root, so a symlink in the
image can never lead the lookup to the host's files, and both use one default
PATH, runc's (the runtimes themselves use it when the env has none; it is
also the formula's default, ``repeatr.model.defaults.DEFAULT_PATH``).
Import-light: it runs in the sandbox helper.
"""

from __future__ import annotations

import os
import stat

from repeatr.errors import JobInvalid
from repeatr.linux import libc

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _stat_in_root(rootfd: int, path: str) -> os.stat_result | None:
    try:
        fd = libc.openat2(rootfd, path.lstrip("/") or ".", os.O_PATH, libc.RESOLVE_IN_ROOT)
    except OSError:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def check_cwd(rootfd: int, cwd: str) -> None:
    """JobInvalid unless ``cwd`` is a directory inside the root."""
    st = _stat_in_root(rootfd, cwd)
    if st is None:
        raise JobInvalid(f"cwd {cwd}: No such file or directory")
    if not stat.S_ISDIR(st.st_mode):
        raise JobInvalid(f"cwd {cwd}: Not a directory")


def find_exec(rootfd: int, name: str, path: str | None, cwd: str) -> str:
    """Where execvp would find ``name`` inside the root: a container path.

    ``path`` is the job's PATH (None: ``DEFAULT_PATH``); a name with a slash is
    taken as is (relative to ``cwd``). JobInvalid when there is no such
    executable file.
    """
    search = DEFAULT_PATH if path is None else path
    if "/" in name:
        candidates = [name if name.startswith("/") else os.path.join(cwd, name)]
    else:
        candidates = [os.path.join(d or cwd, name) for d in search.split(":")]
    for candidate in candidates:
        st = _stat_in_root(rootfd, candidate)
        if st is not None and stat.S_ISREG(st.st_mode):
            if st.st_mode & 0o111:
                return candidate
            if "/" in name:
                raise JobInvalid(f"exec {name}: not executable")
    if "/" in name:
        raise JobInvalid(f"exec {name}: no such file in the container")
    raise JobInvalid(f"exec {name}: not found in PATH={search}")
