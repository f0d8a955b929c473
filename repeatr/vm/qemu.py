"""The command lines of qemu and virtiofsd for one job, and how fast this host runs a VM.

Machine (host-notes.md, and measured again here): ``q35`` with ``qboot``
(a minimal firmware that jumps to the kernel), PVH boot of the guest's ELF
``vmlinux``, virtio-pci devices. ``microvm`` would be cheaper, but under
TCG on this host its guest never gets a timer tick (the PIT calibration
fails and the kernel stalls before ``/init``), where q35's HPET works.

Devices: the assembled root shared by virtiofsd (``vhost-user-fs-pci``,
tag ``root``: guest RAM is a shared memfd, as vhost-user needs); one
``virtio-serial-pci`` with three ``virtserialport``s (never
``virtconsole``: a tty would turn ``\\n`` into ``\\r\\n``) named
``repeatr.status``, ``repeatr.stdout`` and ``repeatr.stderr``, whose host
ends are file descriptors qemu inherits (``/proc/self/fd/N``, opened with
``append=on`` so nothing is truncated); the kernel's console on the serial
port, into a log file (the last lines explain a boot that failed); for a
``bridge`` network, a ``virtio-net-pci`` on a tap repeatr made. Nothing
else (``-nodefaults``); ``-no-reboot`` so a guest's reboot or kernel panic
(``panic=-1``) ends qemu.

Acceleration: hardware KVM where the host has it (``kvm_intel`` or
``kvm_amd`` loaded: ``/dev/kvm`` alone is not enough, a PVM host's runs only
PVM guests), otherwise TCG, software emulation: ~2 s for ``/bin/true``
and one host core busy while the guest runs.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from repeatr.errors import ExecutorError

QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
FIRMWARE = "/usr/share/qemu/qboot.rom"
KVM_MODULES = ("/sys/module/kvm_intel", "/sys/module/kvm_amd")
DEFAULT_MEMORY = 256 << 20  # guest RAM without a memory limit
#: Guest RAM beyond a job's memory limit: the guest kernel's own (the job's cgroup gets the limit).
KERNEL_MEMORY = 160 << 20
MAX_CPUS = 64

#: fds qemu inherits for the ports (its 0-2 are /dev/null and its log).
STATUS_FD, STDOUT_FD, STDERR_FD = 3, 4, 5


def hardware_kvm() -> str | None:
    """Why there is no usable hardware KVM here, or None if there is."""
    if not any(os.path.isdir(m) for m in KVM_MODULES):
        if os.path.exists("/dev/kvm"):
            return ("/dev/kvm is not hardware KVM (neither kvm_intel nor kvm_amd is loaded: "
                    "a nested or PVM hypervisor that stock guest kernels cannot run on)")
        return "no /dev/kvm (no kvm_intel or kvm_amd: no hardware virtualisation here)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not usable by this user"
    return None


def accel_description() -> str:
    """``kvm`` or ``tcg`` and why (``repeatr doctor``)."""
    reason = hardware_kvm()
    if reason is None:
        return "kvm (hardware virtualisation)"
    return f"tcg (software emulation: ~2 s per /bin/true run, a host core busy): {reason}"


def tcg_warning(reason: str) -> str:
    return (f"the vm executor emulates the CPU in software (TCG): {reason}; a run costs "
            "~2 s more than on ns and keeps a host core busy while the guest runs")


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise ExecutorError(f"{QEMU} is not installed",
                            hint="apt-get install qemu-system-x86 qemu-system-common "
                            "(scripts/setup does)")
    return path


def require_parts() -> None:
    for path, package in ((VIRTIOFSD, "qemu-system-common"), (FIRMWARE, "qemu-system-data")):
        if not os.path.exists(path):
            raise ExecutorError(f"{path} is missing",
                                hint=f"apt-get install {package} (scripts/setup does)")


@dataclass(frozen=True)
class Machine:
    """What the guest gets: RAM, vCPUs, acceleration, and the host's paths."""

    kernel: Path
    initrd: Path
    socket: Path  # virtiofsd's vhost-user socket (relative to the cwd: 108 bytes at most)
    console: Path  # the kernel's console log
    memory: int = DEFAULT_MEMORY
    cpus: int = 1
    kvm: bool = False
    tap: str | None = None  # a bridge network's tap device
    mac: str | None = None


def guest_memory(limit: int | None) -> int:
    """Guest RAM for a job with memory limit ``limit`` (bytes, None: none), in MiB multiples."""
    if limit is None:
        return DEFAULT_MEMORY
    mib = 1 << 20
    return max(DEFAULT_MEMORY, -(-(limit + KERNEL_MEMORY) // mib) * mib)


def guest_cpus(cpu: float | None) -> int:
    """vCPUs for a cpu limit in cores (the guest's cgroup gets the fraction)."""
    if cpu is None:
        return 1
    return max(1, min(MAX_CPUS, math.ceil(cpu)))


def qemu_command(qemu: str, m: Machine) -> list[str]:
    mem = f"{m.memory >> 20}M"
    accel = "kvm" if m.kvm else "tcg"
    argv = [
        qemu, "-M", f"q35,accel={accel},memory-backend=mem",
        "-bios", FIRMWARE,
        "-cpu", "host" if m.kvm else "max",
        "-smp", str(m.cpus), "-m", mem,
        "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none", "-monitor", "none",
        "-serial", f"file:{m.console}",
        "-kernel", os.fspath(m.kernel), "-initrd", os.fspath(m.initrd),
        "-append", "console=ttyS0 quiet panic=-1",
        "-chardev", f"socket,id=fs,path={m.socket}",
        "-device", "vhost-user-fs-pci,chardev=fs,tag=root",
        "-device", "virtio-serial-pci",
    ]
    for name, fd in (("status", STATUS_FD), ("stdout", STDOUT_FD), ("stderr", STDERR_FD)):
        argv += [
            "-chardev", f"file,id={name},path=/proc/self/fd/{fd},append=on",
            "-device", f"virtserialport,chardev={name},name=repeatr.{name}",
        ]
    if m.tap is not None:
        mac = f",mac={m.mac}" if m.mac else ""
        argv += [
            "-netdev", f"tap,id=net,ifname={m.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=net{mac}",
        ]
    return argv


def virtiofsd_command(root: str, socket: Path) -> list[str]:
    """virtiofsd sharing ``root`` (file ownership as the guest's uid/gid, no cache)."""
    return [
        VIRTIOFSD, f"--socket-path={socket}", "-o", f"source={root}", "-o", "cache=none",
        "-o", "log_level=err",
        "--rlimit-nofile=0",  # raising it needs CAP_SYS_RESOURCE (host-notes.md)
    ]
