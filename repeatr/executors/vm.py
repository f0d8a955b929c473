"""The vm executor: the job runs in a virtual machine with a kernel of its own.

The strongest isolation repeatr has: the job's system calls reach a guest
kernel, its processes, devices, network stack, keyrings and sysctls are the
guest's, and what reaches the host is the file-sharing protocol of
virtiofsd and three serial ports. It costs the most: under hardware KVM a
boot is a few hundred ms; here, without it, qemu emulates the CPU (TCG):
~2 s for ``/bin/true`` and a host core busy meanwhile (``repeatr.vm.qemu``).
``auto`` never picks it; ask for it with ``--executor vm``.

The root is assembled exactly as for the other executors (the same mount
plan, in the sandbox helper's private mount namespace) and shared into the
guest by virtiofsd, which creates files with the guest's uid and gid: what
the job writes is owned on the host by the same uid/gid as on ``ns``, so
outputs pack to the same ware IDs. ``/proc`` and ``/dev`` are the guest's,
mounted where the plan has them: ``/proc`` by the guest's runner from the
job's pid namespace (``/proc/sys`` and friends read-only, ``/proc/kcore``
and friends masked, as runc does: ``proc_names``), ``/dev`` by its init (a
minimal one of null, zero, full, random, urandom, tty, pts, shm, mqueue).

Inside the guest the job gets what ``ns`` gives it (``repeatr.vm.runner``):
PID 1 of a pid namespace of its own (it sees only its processes), its uid
and gid, only its policy's capabilities (bounding set too),
no_new_privs, the same default seccomp profile (the BPF program compiled
here), its own session. Limits: ``memory`` sizes the guest's RAM (the
limit plus the guest kernel's share) and is enforced by a cgroup in the
guest, as are ``pids`` and ``cpu`` (vCPUs: the limit rounded up; the
fraction in ``cpu.max``); ``timeout`` kills the VM.

Guest parts (kernel, initramfs) are prepared once per host under the state
dir (``repeatr.vm.guest``), from the host's apt sources. Per run, in the
run's workdir: ``vm/initrd`` (base + the job's data), ``vm/fs.sock``,
``vm/console.log``, ``vm/qemu.log``.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.to_thread

from repeatr.assemble.ops import MASKED_PATHS, READONLY_PATHS, Dev, Op, Proc
from repeatr.errors import ExecutorError, JobInvalid
from repeatr.executors._preflight import require_filesystem, require_root
from repeatr.executors.base import (
    NAMESPACES,
    Capabilities,
    ExecutorName,
    FinishedCallback,
    Isolation,
    JobResult,
    JobSpec,
    OutputCallback,
)
from repeatr.executors.helper import HelperExecutor, disk_limit
from repeatr.executors.protocol import NetworkPolicy, Spec, VmCommands
from repeatr.linux import capability
from repeatr.model.limits import LimitName
from repeatr.vm import guest, qemu

#: The guest kernel's last capability (Debian 12's 6.1: CAP_CHECKPOINT_RESTORE).
GUEST_LAST_CAP = 40
BOOT_TIMEOUT = 60.0  # seconds; TCG boots take ~2 s alone, several on a loaded host
CPU_PERIOD_US = 100_000
SOCKET = "fs.sock"  # virtiofsd's, in the VM dir (qemu's and virtiofsd's cwd)
TAP = "rprtap0"  # in the run's own network namespace: one name fits every run
DEFAULT_STATE = Path("/var/lib/repeatr")


class VmExecutor(HelperExecutor):
    name = ExecutorName.VM

    def __init__(
        self,
        *,
        state: Path = DEFAULT_STATE,
        parts: guest.GuestParts | None = None,
        boot_timeout: float = BOOT_TIMEOUT,
        on_warning: Callable[[str], None] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.state = state
        #: The guest's kernel and initramfs (None: prepared under ``state`` on first use).
        self.parts = parts
        self.boot_timeout = boot_timeout
        self.on_warning = on_warning
        self._warned = False

    # --- host -------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return Capabilities(
            isolates=NAMESPACES | {Isolation.KERNEL},
            # bridge: the guest's NIC on a tap in the namespace repeatr.net prepared
            # (the isolation of "none", as for the other executors).
            networks=frozenset({NetworkPolicy.NONE}),
            job_is_pid1=True,  # of a pid namespace in the guest (runner.c)
            hostname=True,
            limits=frozenset({LimitName.TIMEOUT, LimitName.MEMORY, LimitName.PIDS,
                              LimitName.CPU, *disk_limit()}),
            last_capability=GUEST_LAST_CAP,
        )

    def preflight(self) -> None:
        require_root("vm")
        require_filesystem("overlay", "load the module with `modprobe overlay`")
        qemu.find_qemu()
        qemu.require_parts()

    def version(self) -> str:
        """qemu's ``--version`` first line; ExecutorError if it will not run."""
        import subprocess

        path = qemu.find_qemu()
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise ExecutorError(f"{path} --version failed: {e}") from e
        return out.splitlines()[0].strip() if out.strip() else "unknown"

    def accel_kvm(self) -> bool:
        """Hardware KVM if the host has it; else TCG, with a warning (once) saying why."""
        reason = qemu.hardware_kvm()
        if reason is None:
            return True
        if not self._warned and self.on_warning is not None:
            self.on_warning(qemu.tcg_warning(reason))
        self._warned = True
        return False

    def check_job(self, job: JobSpec) -> None:
        super().check_job(job)
        if job.tty is not None:
            raise JobInvalid("the vm executor has no terminal for an interactive job",
                             hint="use the ns executor for twerk")

    # --- the mount plan: /proc and /dev are the guest's ---------------------------
    def helper_mounts(self, job: JobSpec) -> tuple[Op, ...]:
        return tuple(op for op in job.mounts if not isinstance(op, Proc | Dev))

    def runtime_mountpoints(self, job: JobSpec) -> list[str]:
        return sorted({op.dest for op in job.mounts if isinstance(op, Proc | Dev)})

    def seccomp_program(self, job: JobSpec) -> bytes | None:
        return None  # not the helper's to install: the guest's runner does (job/seccomp)

    # --- the VM ---------------------------------------------------------------------
    def vm_dir(self, job: JobSpec) -> Path:
        return job.workdir / "vm"

    def machine(self, job: JobSpec, parts: guest.GuestParts, kvm: bool) -> qemu.Machine:
        d = self.vm_dir(job)
        lim = job.limits
        return qemu.Machine(
            kernel=parts.kernel,
            initrd=d / "initrd",
            socket=Path(SOCKET),
            console=d / "console.log",
            memory=qemu.guest_memory(lim.memory_bytes() if lim else None),
            cpus=qemu.guest_cpus(lim.cpu if lim else None),
            kvm=kvm,
            tap=TAP if job.network.policy is NetworkPolicy.BRIDGE else None,
            mac=random_mac(),
        )

    def vm_commands(self, job: JobSpec) -> VmCommands | None:
        parts = self.parts
        assert parts is not None, "run() prepares the guest first"
        m = self.machine(job, parts, self.accel_kvm())
        return VmCommands(
            qemu=qemu.qemu_command(qemu.find_qemu(), m),
            virtiofsd=qemu.virtiofsd_command(os.fspath(job.root), m.socket),
            dir=os.fspath(self.vm_dir(job)),
            socket=os.fspath(m.socket),
            initrd=os.fspath(m.initrd),
            console=os.fspath(m.console),
            log=os.fspath(self.vm_dir(job) / "qemu.log"),
            boot_timeout=self.boot_timeout,
            tap=m.tap,
        )

    def debug_commands(self, spec: Spec) -> None:
        super().debug_commands(spec)
        if self.on_debug is None or spec.vm is None:
            return
        vm = spec.vm
        self.on_debug(f"virtiofsd: {shlex.join(vm.virtiofsd)}  (in {vm.dir})")
        self.on_debug(f"qemu: {shlex.join(vm.qemu)}  (in {vm.dir}; fds 3, 4, 5: the status "
                      "port's pipe, the job's stdout and stderr)")

    def job_files(self, job: JobSpec) -> dict[str, bytes]:
        """The job's data for the guest (``job/*`` in the initramfs; see runner.c)."""
        caps = capability.grantable(job.capabilities, last_cap=GUEST_LAST_CAP)
        profile = self.seccomp_profile(job)
        program = b"" if profile is None else self.compiled(profile)
        mounts = [f"{'proc' if isinstance(op, Proc) else 'dev'}:{op.dest}"
                  for op in job.mounts if isinstance(op, Proc | Dev)]
        return {
            "argv": b"".join(os.fsencode(a) + b"\0" for a in job.argv),
            "env": b"".join(os.fsencode(f"{k}={v}") + b"\0" for k, v in job.env),
            "cwd": os.fsencode(job.cwd),
            "uid": str(job.uid).encode(),
            "gid": str(job.gid).encode(),
            "caps": str(sum(1 << c for c in caps)).encode(),
            "seccomp": program,
            "mounts": (" ".join(mounts) + "\n").encode(),
            "proc-masked": proc_names(MASKED_PATHS),
            "proc-readonly": proc_names(READONLY_PATHS),
            "hostname": os.fsencode(job.hostname or ""),
            "net": b"",
            "limits": guest_limits(job).encode(),
        }

    def write_initrd(self, job: JobSpec, parts: guest.GuestParts) -> None:
        d = self.vm_dir(job)
        d.mkdir(mode=0o700, exist_ok=True)
        with open(d / "initrd", "wb") as out, open(parts.initramfs, "rb") as base:
            shutil.copyfileobj(base, out, 1 << 20)
            out.write(guest.job_archive(self.job_files(job)))

    async def run(
        self,
        job: JobSpec,
        *,
        on_output: OutputCallback,
        on_finished: FinishedCallback | None = None,
    ) -> JobResult:
        self.check_job(job)
        if self.parts is None:
            self.parts = await anyio.to_thread.run_sync(
                lambda: guest.prepare(self.state, on_progress=self.on_debug)
            )
        parts = self.parts
        await anyio.to_thread.run_sync(lambda: self.write_initrd(job, parts))
        try:
            return await super().run(job, on_output=on_output, on_finished=on_finished)
        finally:
            shutil.rmtree(self.vm_dir(job), ignore_errors=True)


def random_mac() -> str:
    """A locally administered unicast MAC (qemu's default is the same for every VM)."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def proc_names(paths: tuple[str, ...]) -> bytes:
    """The names under ``/proc`` among ``paths``, one a line (for the guest's runner)."""
    names = (p.removeprefix("/proc/") for p in paths if p.startswith("/proc/"))
    return "".join(f"{name}\n" for name in names).encode()


def guest_limits(job: JobSpec) -> str:
    """The guest cgroup's files and values (``file value`` lines) for ``job.limits``."""
    lim = job.limits
    if lim is None:
        return ""
    lines = []
    if (mem := lim.memory_bytes()) is not None:
        lines += [f"memory.max {mem}", "memory.swap.max 0"]
    if lim.pids is not None:
        lines.append(f"pids.max {lim.pids}")
    if lim.cpu is not None:
        lines.append(f"cpu.max {max(1000, round(lim.cpu * CPU_PERIOD_US))} {CPU_PERIOD_US}")
    return "".join(f"{line}\n" for line in lines)

