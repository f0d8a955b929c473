"""A busybox root filesystem for tests, built once per session into a tmpfs.

``session_rootfs()`` mounts a tmpfs (small-file work on the root ext4 is slow
and erratic, host-notes.md), builds the rootfs there with scripts/mkrootfs,
and yields a ``ScratchArea``; on exit it unmounts the tmpfs and removes its
mount point. Per-test work dirs live in the same tmpfs.

The helpers at the bottom check that a test left the host as it found it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from repeatr.linux import libc

REPO = Path(__file__).resolve().parent.parent
MKROOTFS = REPO / "scripts" / "mkrootfs"


@dataclass(frozen=True)
class ScratchArea:
    base: Path  # the tmpfs mount point
    rootfs: Path  # the busybox rootfs (a lower layer: must never change)

    def new_workdir(self) -> Path:
        path = self.base / "runs" / uuid.uuid4().hex[:12]
        path.mkdir(parents=True)
        return path


@contextmanager
def session_rootfs() -> Iterator[ScratchArea]:
    base = Path(tempfile.mkdtemp(prefix="repeatr-test-"))
    libc.mount("tmpfs", base, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "size=512m,mode=755")
    try:
        rootfs = base / "rootfs"
        subprocess.run([sys.executable, os.fspath(MKROOTFS), os.fspath(rootfs)], check=True)
        yield ScratchArea(base, rootfs)
    finally:
        libc.umount2(base, libc.MNT_DETACH)
        base.rmdir()


def tree_digest(root: Path) -> str:
    """A digest of every entry's metadata and content under ``root`` (lstat, no follow)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [".", *sorted(dirnames), *sorted(filenames)]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(
                f"{os.path.relpath(p, root)} {st.st_mode:o} {st.st_uid} {st.st_gid} "
                f"{st.st_size} {st.st_mtime_ns}\n".encode()
            )
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def mountinfo() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


# Other sessions on this shared machine run tests and benchmarks while ours
# run: they mount tmpfs dirs and create named network namespaces (rprbench-,
# rprtest-). Our executors only make anonymous namespaces, so those are not
# ours. REPEATR_TEST_STRICT_HOST=1 (an idle machine) and CI tolerate nothing.
STRICT = os.environ.get("REPEATR_TEST_STRICT_HOST") == "1" or os.environ.get("CI") == "true"
FOREIGN_NETNS_PREFIX = "rpr"
#: Named netns other sessions' runs make: bridged runs' ``repeatr-<run id>``
#: (tests that make bridged runs of their own check those themselves).
FOREIGN_NETNS_PREFIXES = (FOREIGN_NETNS_PREFIX, "repeatr-")


@contextmanager
def named_netns(name: str) -> Iterator[Path]:
    """A network namespace ``/run/netns/NAME`` (``ip -n NAME`` reaches it), made
    without ``ip netns add``: that would turn ``/run/netns`` into a mount point
    for good, a host change the suite's guards rightly report."""
    path = Path("/run/netns") / name
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.touch(mode=0o444, exist_ok=False)
    try:
        subprocess.run(["unshare", f"--net={path}", "true"], check=True)
        yield path
    finally:
        subprocess.run(["umount", "--lazy", path], check=False, capture_output=True)
        path.unlink()


def iproute2_netns_dir(line: str) -> bool:
    """``/run/netns`` bound onto itself: what ``ip netns add`` leaves on a host for
    good (repeatr makes no such mount). Another session's ``ip netns add`` may
    make it while we run; a mountinfo ``line``."""
    fields = line.split()
    return fields[3] == fields[4] == "/run/netns"


def foreign_mount(line: str, area: ScratchArea) -> bool:
    """A mount another session made concurrently: a tmpfs outside our area, or
    one of its named netns (and the netns dir its ``ip netns add`` made a mount
    point). Anything else new (overlay, proc, devpts, binds, anything under our
    area) fails the test."""
    if STRICT:
        return False
    if iproute2_netns_dir(line):
        return True
    fields = line.split()
    mount_point = fields[4]
    fstype = fields[fields.index("-") + 1]
    if fstype == "nsfs":
        return mount_point.startswith(tuple("/run/netns/" + p for p in FOREIGN_NETNS_PREFIXES))
    if fstype == "overlay" and mount_point.startswith("/tmp/repeatr-bench-"):
        return True  # a benchmark's podman containers (benchmarks' own scratch dirs)
    return fstype == "tmpfs" and not mount_point.startswith(os.fspath(area.base))


def netns_list() -> list[str]:
    """Named network namespaces, without the other sessions' benchmark and run ones.

    Names only: ``ip netns`` adds `` (id: N)`` once a peer is assigned an id,
    which another process may do at any time."""
    out = subprocess.run(["ip", "netns"], capture_output=True, text=True, check=True).stdout
    return sorted(
        name for name in (line.split()[0] for line in out.splitlines() if line.strip())
        if STRICT or not name.startswith(FOREIGN_NETNS_PREFIXES)
    )


def processes_with(marker: str) -> list[int]:
    """Pids whose command line (arguments joined by spaces) contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read().replace(b"\0", b" "):
                    found.append(int(entry))
        except OSError:
            pass
    return found


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=False)
