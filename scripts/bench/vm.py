#!/usr/bin/env python3
"""The vm executor's cost: a warm VM run of /bin/true against a bare qemu boot and ns.

    sudo .venv/bin/python scripts/bench/vm.py [--runs 5]

Medians of warm runs (one warm-up first), in the same tiny busybox rootfs
(on /dev/shm), with the guest's parts already prepared:

- *vm*: ``VmExecutor.run()`` end to end (helper, overlay assembly,
  virtiofsd, qemu boot, the job, power-off, teardown);
- *bare*: the same kernel and initramfs booted by hand: virtiofsd over the
  rootfs itself and qemu with the same command line, /bin/true as the job,
  until qemu exits (what any VM runner would pay at least);
- *ns*: ``NsExecutor.run()`` of the same job, for scale.

The goal: vm <= 1.2 x bare. Under TCG (no hardware KVM) both are mostly the
guest kernel's boot, emulated; the host's other load shows in every number.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import anyio

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.fspath(REPO))

from warm import timed  # noqa: E402

from repeatr.executors import probe  # noqa: E402
from repeatr.executors.ns import NsExecutor  # noqa: E402
from repeatr.executors.vm import VmExecutor  # noqa: E402
from repeatr.executors.vm_sandbox import spawn  # noqa: E402
from repeatr.vm import guest, qemu  # noqa: E402

GOAL = 1.2


def bare_boot(area: Path, ex: VmExecutor, parts: guest.GuestParts) -> None:
    """virtiofsd + qemu by hand, over the rootfs, /bin/true; until qemu exits."""
    d = Path(tempfile.mkdtemp(dir=area))
    try:
        job = probe.true_job(area / "rootfs", d, ex)
        files = ex.job_files(job)
        files["exec"] = b"/bin/true"
        (d / "initrd").write_bytes(parts.initramfs.read_bytes() + guest.job_archive(files))
        m = qemu.Machine(kernel=parts.kernel, initrd=d / "initrd", socket=Path("fs.sock"),
                         console=d / "console.log", kvm=qemu.hardware_kvm() is None)
        log = os.open(d / "log", os.O_WRONLY | os.O_CREAT, 0o600)
        status = os.open(d / "status", os.O_WRONLY | os.O_CREAT, 0o600)
        null = os.open("/dev/null", os.O_WRONLY)
        try:
            fsd = spawn(qemu.virtiofsd_command(os.fspath(area / "rootfs"), m.socket), {}, log,
                        os.fspath(d))
            while not (d / "fs.sock").exists():
                time.sleep(0.001)
            vm = spawn(qemu.qemu_command(qemu.find_qemu(), m), {3: status, 4: null, 5: null},
                       log, os.fspath(d))
            os.waitpid(vm, 0)
            os.waitpid(fsd, 0)
            # virtiofsd leaves its pid file, named after the socket's path as given
            # (the helper gives it a private /run/virtiofsd instead)
            name = os.fspath(m.socket).replace("/", ".") + ".pid"
            (Path("/run/virtiofsd") / name).unlink(missing_ok=True)
        finally:
            for fd in (log, status, null):
                os.close(fd)
        if "exit 0" not in (d / "status").read_text():
            raise SystemExit(f"the bare boot did not run /bin/true: {(d / 'status').read_text()}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    vm = VmExecutor()
    vm.preflight()
    parts = guest.prepare(vm.state)
    vm.parts = parts
    ns = NsExecutor()
    print(f"acceleration: {qemu.accel_description()}")
    with probe.scratch_rootfs(Path("/dev/shm")) as area:
        vm_ms = probe.median_ms(anyio.run(probe.start_cost, vm, area, args.runs))
        ns_ms = probe.median_ms(anyio.run(probe.start_cost, ns, area, args.runs))
        bare_ms = timed(lambda: bare_boot(area, vm, parts), args.runs, warmup=True)
    ratio = vm_ms / bare_ms
    print(f"vm   /bin/true: {vm_ms:8.1f} ms (median of {args.runs}, warm)")
    print(f"bare qemu boot: {bare_ms:8.1f} ms (same kernel + initramfs, virtiofsd, by hand)")
    print(f"ns   /bin/true: {ns_ms:8.1f} ms")
    verdict = "ok" if ratio <= GOAL else "OVER"
    print(f"vm / bare = {ratio:.2f} (goal <= {GOAL}): {verdict}")


if __name__ == "__main__":
    main()
