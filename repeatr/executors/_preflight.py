"""Host checks shared by the helper-based executors."""

from __future__ import annotations

import os

from repeatr.errors import ExecutorError


def require_root(name: str) -> None:
    if os.geteuid() != 0:
        raise ExecutorError(
            f"the {name} executor needs root (mount and namespace creation)",
            hint="run repeatr as root, or with sudo",
        )


def require_filesystem(fstype: str, fix: str) -> None:
    try:
        with open("/proc/filesystems") as f:
            known = {line.split()[-1] for line in f if line.strip()}
    except OSError as e:
        raise ExecutorError("cannot read /proc/filesystems", hint="mount /proc") from e
    if fstype not in known:
        raise ExecutorError(f"{fstype} is not available in this kernel", hint=fix)


def require_namespaces(kinds: list[str]) -> None:
    missing = [k for k in kinds if not os.path.exists(f"/proc/self/ns/{k}")]
    if missing:
        raise ExecutorError(
            f"the kernel lacks namespaces: {', '.join(missing)}",
            hint="use a kernel built with CONFIG_NAMESPACES and these namespace types",
        )
