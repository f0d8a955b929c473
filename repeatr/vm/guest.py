"""The guest's kernel and base initramfs, prepared once per host from Debian packages.

Parts, in ``<state>/vm/guest/<key>/`` (``DEFAULT_STATE``: ``/var/lib/repeatr``):

- ``vmlinux``: the ELF kernel extracted from the bzImage of Debian's cloud
  kernel (``linux-image-cloud-amd64``: virtio-mmio, virtiofs and
  virtio-console as modules, PVH boot). Fetched with ``apt-get download``
  and unpacked with ``dpkg-deb -x``, so nothing lands in the host's /boot
  and nothing comes from anywhere but the host's apt sources. PVH boot of
  the ELF costs ~2.5 s less than the bzImage under TCG (host-notes.md).
- ``initramfs``: an uncompressed newc cpio (decompressing under TCG would be
  emulated) of the host's static busybox (Debian's ``busybox-static``) with
  every applet linked, ``/init`` (``init.sh``), ``/bin/runner`` (``runner.c``,
  compiled here, statically) and the modules the guest loads, in load order
  (``modules/order``), resolved with ``busybox depmod`` on the unpacked tree.

``key`` is the kernel package's version plus a digest of everything else that
goes in (the busybox binary, the init and runner sources), so an upgrade
prepares new parts. Each use marks its parts (their dir's mtime); parts
unused for ``STALE_AFTER`` are removed when new ones are prepared, never
sooner: two repeatr versions on one host (or a run booting from the old
parts meanwhile) each keep theirs rather than removing the other's and
preparing theirs again by turns. Preparing takes the
lock ``<state>/vm/guest.lock`` (one host-wide preparation at a time; a
second invocation waits, then finds the parts ready) and builds in
temporary dirs (``.``-prefixed) renamed into place, so a killed preparation
leaves no half-made parts; the next one removes its temporary dirs.

Each job's data is a second, small cpio appended to the base one
(``job_archive``): the kernel unpacks both (the command line is limited to
2 KiB, so argv and env cannot go there).
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from repeatr.errors import ExecutorError
from repeatr.vm import cpio

KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = "/bin/busybox"
#: Modules the guest needs (their dependencies come from modules.dep):
#: virtio-pci devices (q35), the shared root, the stdio/status ports, the tap's NIC.
MODULES = ("virtio_pci", "virtiofs", "virtio_console", "virtio_net")
LOCK_TIMEOUT = 600.0  # seconds: preparing downloads ~27 MB and compiles the runner
STALE_AFTER = 7 * 86400.0  # seconds unused before another preparation removes parts
_LZ4_MAGIC = b"\x02\x21\x4c\x18"  # lz4 legacy frame (the kernel's CONFIG_KERNEL_LZ4)
_XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass(frozen=True)
class GuestParts:
    """A prepared guest: the kernel to boot and the base initramfs."""

    dir: Path
    kernel: Path
    initramfs: Path
    kernel_version: str  # the Debian package's version

    @classmethod
    def at(cls, path: Path, kernel_version: str) -> GuestParts:
        return cls(path, path / "vmlinux", path / "initramfs", kernel_version)


def _run(argv: list[str], *, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ExecutorError(
            f"preparing the VM guest: cannot run {argv[0]}: {e}",
            hint="run scripts/setup (it installs what the VM executor needs)",
        ) from e
    if done.returncode != 0:
        err = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise ExecutorError(
            f"preparing the VM guest: `{' '.join(argv)}` failed: {' / '.join(err)}",
            hint="the guest comes from Debian's apt: run `apt-get update`, then scripts/setup",
        )
    return done.stdout


def kernel_package() -> tuple[str, str]:
    """The versioned image package ``KERNEL_PACKAGE`` depends on, and its version."""
    out = _run(["apt-cache", "show", "--no-all-versions", KERNEL_PACKAGE])
    for line in out.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                name, _, rest = dep.strip().partition(" ")
                if name.startswith("linux-image-"):
                    version = rest.strip("() =")
                    return name, version
    raise ExecutorError(f"preparing the VM guest: {KERNEL_PACKAGE} names no kernel image",
                        hint="run `apt-get update`")


def _source(name: str) -> bytes:
    return resources.files("repeatr.vm").joinpath(name).read_bytes()


def sources_digest() -> str:
    """What goes into the initramfs besides the kernel's modules: busybox, init, runner."""
    digest = hashlib.sha256()
    for part in (Path(BUSYBOX).read_bytes(), _source("init.sh"), _source("runner.c")):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (its lz4- or xz-compressed payload)."""
    at = bzimage.find(_LZ4_MAGIC)
    if at >= 0:
        try:
            done = subprocess.run(["lz4", "-dc"], input=bzimage[at:], capture_output=True,
                                  check=False)
        except OSError as e:
            raise ExecutorError("preparing the VM guest: lz4 is not installed",
                                hint="apt-get install lz4 (scripts/setup does)") from e
        # lz4 complains about the bzImage's bytes after the frame; the ELF is whole.
        if done.stdout.startswith(b"\x7fELF"):
            return done.stdout
    at = bzimage.find(_XZ_MAGIC)
    if at >= 0:
        elf = lzma.LZMADecompressor().decompress(bzimage[at:])
        if elf.startswith(b"\x7fELF"):
            return elf
    raise ExecutorError("preparing the VM guest: no lz4 or xz kernel in the bzImage")


def module_order(modules_dir: Path, wanted: tuple[str, ...]) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``wanted`` and their dependencies, in load order."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def load(mod: str) -> None:
        if mod in order:
            return
        for dep in deps.get(mod, []):
            load(dep)
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise ExecutorError(f"preparing the VM guest: the kernel has no module {name}")
        load(by_name[name])
    return order


def base_archive(busybox: Path, applets: list[str], runner: Path, modules: list[Path]) -> bytes:
    entries = [cpio.directory(d) for d in ("bin", "dev", "proc", "sys", "newroot", "job",
                                           "modules", "tmp", "run")]
    entries.append(cpio.char_device("dev/console", 5, 1))
    entries.append(cpio.file("bin/busybox", busybox.read_bytes(), 0o755))
    entries += [cpio.symlink(f"bin/{a}", "busybox") for a in applets if a != "busybox"]
    entries.append(cpio.file("bin/runner", runner.read_bytes(), 0o755))
    entries.append(cpio.file("init", _source("init.sh"), 0o755))
    names = []
    for mod in modules:
        names.append(mod.name)
        entries.append(cpio.file(f"modules/{mod.name}", mod.read_bytes()))
    entries.append(cpio.file("modules/order", "".join(f"{n}\n" for n in names).encode()))
    return cpio.archive(entries)


def build(into: Path, package: str, scratch: Path) -> None:
    """Download, unpack and assemble the parts into ``into`` (an empty dir)."""
    _run(["apt-get", "download", "-q", package], cwd=scratch)
    debs = list(scratch.glob("*.deb"))
    if len(debs) != 1:
        raise ExecutorError(f"preparing the VM guest: apt-get download gave {len(debs)} files")
    tree = scratch / "tree"
    _run(["dpkg-deb", "-x", os.fspath(debs[0]), os.fspath(tree)])
    (kernel_release,) = os.listdir(tree / "lib" / "modules")
    _run([BUSYBOX, "depmod", "-b", os.fspath(tree), kernel_release])
    bzimage = (tree / "boot" / f"vmlinuz-{kernel_release}").read_bytes()
    (into / "vmlinux").write_bytes(extract_vmlinux(bzimage))
    mod_dir = tree / "lib" / "modules" / kernel_release
    modules = [mod_dir / m for m in module_order(mod_dir, MODULES)]
    runner = scratch / "runner"
    source = scratch / "runner.c"
    source.write_bytes(_source("runner.c"))
    _run(["gcc", "-static", "-Os", "-o", os.fspath(runner), os.fspath(source)])
    applets = _run([BUSYBOX, "--list"]).split()
    (into / "initramfs").write_bytes(base_archive(Path(BUSYBOX), applets, runner, modules))
    (into / "kernel-release").write_text(kernel_release + "\n")


def prepare(
    state: Path, *, on_progress: Callable[[str], None] | None = None
) -> GuestParts:
    """The guest's parts for this host, prepared now if they are not yet (see the module doc)."""
    from repeatr import locks

    base = state / "vm" / "guest"
    try:
        digest = sources_digest()
    except OSError as e:
        raise ExecutorError(f"preparing the VM guest: {e}",
                            hint="apt-get install busybox-static (scripts/setup does)") from e
    try:
        package, version = kernel_package()
    except ExecutorError:
        # No apt lists (cleaned, or never updated): parts prepared before with
        # these sources still boot.
        ready = sorted((p for p in base.glob(f"[!.]*-{digest}") if (p / "initramfs").exists()),
                       key=lambda p: p.stat().st_mtime)
        if not ready:
            raise
        return GuestParts.at(ready[-1], ready[-1].name.removesuffix(f"-{digest}"))
    key = f"{version}-{digest}"
    parts = GuestParts.at(base / key, version)
    if parts.initramfs.exists():
        return _used(parts)
    base.mkdir(parents=True, exist_ok=True)
    with locks.acquire(state / "vm" / "guest.lock", resource="the VM guest's parts",
                       timeout=LOCK_TIMEOUT, on_wait=on_progress):
        if parts.initramfs.exists():
            return _used(parts)
        if on_progress is not None:
            on_progress(f"preparing the VM guest (once per host): {package} {version}")
        for stale in base.glob(".*"):  # a preparation killed midway (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=base))
        building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
        try:
            build(building, package, scratch)
            building.rename(parts.dir)
            for old in stale_parts(base, keep=parts.dir):
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(building, ignore_errors=True)
    return parts


def _used(parts: GuestParts) -> GuestParts:
    """``parts``, marked as used now (``stale_parts`` spares them for ``STALE_AFTER``)."""
    with contextlib.suppress(OSError):  # a read-only state dir: the parts still boot
        os.utime(parts.dir)
    return parts


def stale_parts(base: Path, *, keep: Path, now: float | None = None) -> list[Path]:
    """Parts under ``base`` other than ``keep`` that no run used for ``STALE_AFTER``."""
    now = time.time() if now is None else now
    stale = []
    for old in base.glob("[!.]*"):
        try:
            if old != keep and now - old.stat().st_mtime > STALE_AFTER:
                stale.append(old)
        except OSError:
            pass  # removed meanwhile
    return stale


def job_archive(files: dict[str, bytes]) -> bytes:
    """The per-job cpio: ``files`` (names under ``/job``) appended to the base initramfs."""
    return cpio.archive([cpio.file(f"job/{name}", data) for name, data in sorted(files.items())])
