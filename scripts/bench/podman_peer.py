"""Podman as a side-by-side peer: configured for this host, all its state on our tmpfs.

Not a benchmark itself: ``run.py`` imports it.

Podman (Debian's 4.3) is configured the way host-notes says it must be here:
runc (crun refuses hybrid cgroups), the cgroupfs manager (there is no
systemd), no default ulimits (they fail without CAP_SYS_RESOURCE), and every
run with ``--network=none``. The configuration is a file of ours named by
``CONTAINERS_CONF`` (which makes podman ignore every system and user
containers.conf), and storage is ours through ``CONTAINERS_STORAGE_CONF``:
a host's own /etc/containers is neither read nor written, and its images and
containers are not touched. Events go to a file of ours: there is no
journald, and with ``events_logger = "none"`` ``podman run`` cannot see its
container exit and waits out a 20 s timeout instead.

Everything podman keeps lives under ``base``; ``close()`` removes the
containers and the image, resets the storage and unmounts what podman
mounted under it. Two things land outside whatever the configuration says:
podman's lock segment ``/dev/shm/libpod_lock``, shared by every root podman
on the host (its allocation bitmap lives in the segment, so ours and a
host's never take the same lock), and the image library's blob-info cache
in ``/var/lib/containers/cache``; each is removed at the end only if it did
not exist before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

LOCK_SEGMENT = Path("/dev/shm/libpod_lock")
#: Where containers/image keeps its blob-info cache for root, whatever the storage says.
BLOB_CACHE = Path("/var/lib/containers/cache")


def available() -> str | None:
    """Why podman can't be used here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup installs it)"
    if shutil.which("runc") is None:
        return "runc is not installed"
    return None


class Podman:
    """One podman configuration under ``base``, and one image imported from a rootfs.

    Its configuration is written at once; ``load()`` imports the image, and
    ``close()`` (call it whatever happened) removes everything podman made.
    """

    image = "localhost/repeatr-bench-rootfs:latest"

    def __init__(self, base: Path) -> None:
        self.base = base
        self.lock_existed = LOCK_SEGMENT.exists()
        self.made = [p for p in (BLOB_CACHE.parent, BLOB_CACHE) if not p.exists()]
        for sub in ("root", "run", "tmp", "cni"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        conf = base / "containers.conf"
        conf.write_text(
            "[containers]\n"
            "default_ulimits = []\n"
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{base / "tmp"}"\n'
            "[network]\n"
            f'network_config_dir = "{base / "cni"}"\n'
        )
        storage = base / "storage.conf"
        storage.write_text(
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{base / "root"}"\n'
            f'runroot = "{base / "run"}"\n'
        )
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(conf),
            "CONTAINERS_STORAGE_CONF": str(storage),
        }

    def load(self, rootfs: Path) -> None:
        """Import ``rootfs`` as our image (``close()`` removes it)."""
        archive = self.base / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        subprocess.run(
            ["podman", "import", "-q", str(archive), self.image],
            check=True, env=self.env, stdout=subprocess.DEVNULL,
        )
        archive.unlink()

    def argv(self, *argv: str) -> list[str]:
        """``podman run --rm`` of our image, with this host's settings."""
        return ["podman", "run", "--rm", "--network=none", self.image, *argv]

    def run(self, *argv: str) -> None:
        subprocess.run(
            self.argv(*argv), check=True, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )

    def close(self) -> None:
        """Remove every container and image, then what podman mounted or created."""
        for cmd in (["rm", "-af"], ["rmi", "-af"], ["system", "reset", "-f"]):
            subprocess.run(
                ["podman", *cmd], env=self.env, check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        # The overlay driver bind-mounts its own directory: take down whatever is left.
        mounts = [
            line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ]
        for point in sorted(
            (m for m in mounts if m.startswith(str(self.base) + "/")), key=len, reverse=True
        ):
            subprocess.run(["umount", "-l", point], check=False, stderr=subprocess.DEVNULL)
        if not self.lock_existed:
            LOCK_SEGMENT.unlink(missing_ok=True)
        if self.made:
            shutil.rmtree(self.made[0], ignore_errors=True)
