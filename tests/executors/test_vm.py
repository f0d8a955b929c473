"""What is the vm executor's own: the guest's parts, the boot deadline,
cancellation mid-boot, the job's view of the guest (several checks per boot).

The conformance, limits and attack suites run on vm too (a chosen subset:
``tests/conftest.py``, ``VM_CASES``); ``tests/run/test_vm_differential.py``
compares output ware IDs with ns and runc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from repeatr.errors import Category, ExecutorError
from repeatr.executors.base import JobResult
from repeatr.executors.vm import VmExecutor
from repeatr.executors.vm_sandbox import VIRTIOFSD_RUN
from repeatr.linux import libc
from repeatr.model.limits import Limits
from repeatr.vm import cpio, guest
from tests.rootfs import REPO, ScratchArea, processes_with, remove_tree

from .conftest import Jobs, usable

pytestmark = [pytest.mark.root, pytest.mark.runtime("vm")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def parts() -> guest.GuestParts:
    usable("vm")
    return guest.prepare(VmExecutor().state)


@pytest.fixture
def sleeping_guest(parts: guest.GuestParts, tmp_path: Path) -> guest.GuestParts:
    """The real kernel, with an /init that never reports (a hung boot)."""
    init = b"#!/bin/sh\nexec /bin/sleep 100000\n"
    (tmp_path / "initramfs").write_bytes(
        parts.initramfs.read_bytes() + cpio.archive([cpio.file("init", init, 0o755)])
    )
    return guest.GuestParts(tmp_path, parts.kernel, tmp_path / "initramfs", parts.kernel_version)


def virtiofsd_pid_files() -> list[str]:
    return sorted(os.listdir(VIRTIOFSD_RUN)) if os.path.isdir(VIRTIOFSD_RUN) else []


def vm_processes(workdir: Path) -> list[int]:
    """qemu and virtiofsd processes of the run in ``workdir`` (their command lines name it)."""
    return processes_with(os.fspath(workdir / "vm"))


def test_parts_are_prepared_once_and_keyed_by_the_package(parts: guest.GuestParts) -> None:
    assert parts.dir.name.startswith(parts.kernel_version + "-")
    assert parts.kernel.read_bytes()[:4] == b"\x7fELF"
    again = guest.prepare(parts.dir.parent.parent.parent)
    assert again == parts
    assert not [p for p in parts.dir.parent.iterdir() if p.name.startswith(".")], (
        "a half-made preparation was left behind"
    )


def test_other_parts_are_spared_while_in_use(parts: guest.GuestParts, tmp_path: Path) -> None:
    """Two repeatr versions on one host keep their own parts: a preparation removes
    only parts no run used for STALE_AFTER (each use marks them)."""
    now = time.time()
    base = tmp_path / "guest"
    ages = {"mine": 0.0, "other-version": 3600.0, "long-gone": guest.STALE_AFTER + 60}
    for name, age in ages.items():
        (base / name).mkdir(parents=True)
        os.utime(base / name, (now - age, now - age))
    assert guest.stale_parts(base, keep=base / "mine", now=now) == [base / "long-gone"]
    old = now - guest.STALE_AFTER - 60
    os.utime(parts.dir, (old, old))
    assert guest.prepare(parts.dir.parent.parent.parent) == parts
    assert parts.dir.stat().st_mtime > old + 60, "a use did not mark the parts"


def test_cpio_archives_are_newc_that_busybox_reads(tmp_path: Path) -> None:
    """Each archive unpacks with busybox cpio; a later one's files replace an earlier one's."""
    first = cpio.archive([cpio.directory("d"), cpio.file("d/f", b"one\n")])
    second = cpio.archive([cpio.file("d/f", b"two\n", 0o600), cpio.symlink("d/l", "f")])
    for data in (first, second):
        proc = subprocess.run(["busybox", "cpio", "-idu"], input=data, cwd=tmp_path,
                              capture_output=True, check=False)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "f").read_bytes() == b"two\n"
    assert (tmp_path / "d" / "f").stat().st_mode & 0o777 == 0o600
    assert os.readlink(tmp_path / "d" / "l") == "f"


@pytest.mark.anyio
async def test_a_guest_that_never_boots_is_killed_at_the_deadline(
    area: ScratchArea, workdir: Path, sleeping_guest: guest.GuestParts
) -> None:
    ex = VmExecutor(parts=sleeping_guest, boot_timeout=3)
    with pytest.raises(ExecutorError) as info:
        await Jobs(area, workdir, ex).sh("echo never")
    assert info.value.category == Category.EXECUTOR
    assert vm_processes(workdir) == []


@pytest.mark.anyio
async def test_cancel_mid_boot_leaves_nothing(
    area: ScratchArea, workdir: Path, sleeping_guest: guest.GuestParts
) -> None:
    ex = VmExecutor(parts=sleeping_guest, boot_timeout=600)
    result: JobResult | None = None
    with anyio.move_on_after(120) as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_once_booting() -> None:
                while not vm_processes(workdir):  # noqa: ASYNC110 (polling /proc)
                    await anyio.sleep(0.05)
                await anyio.sleep(0.5)  # qemu is running its guest
                tg.cancel_scope.cancel()

            async def run() -> None:
                nonlocal result
                result = (await Jobs(area, workdir, ex).sh("echo never")).result

            tg.start_soon(cancel_once_booting)
            tg.start_soon(run)
    assert not scope.cancelled_caught, "qemu never started"
    assert result is None
    assert vm_processes(workdir) == []
    assert not (workdir / "vm").exists()


@pytest.fixture
def vm_jobs(area: ScratchArea, workdir: Path) -> Iterator[Jobs]:
    yield Jobs(area, workdir, usable("vm"))


@pytest.mark.anyio
async def test_the_job_sees_its_guest(vm_jobs: Jobs) -> None:
    """One boot, many checks: what the job sees of the VM it runs in."""
    script = r"""
        echo "uid $(id -u) $(id -g)"
        echo "pid1 $(cat /proc/1/comm)"
        echo "ppid $PPID"
        echo "nnp $(grep NoNewPrivs /proc/self/status | cut -f2)"
        echo "seccomp $(grep '^Seccomp:' /proc/self/status | cut -f2)"
        echo "fds $(ls /proc/self/fd | tr '\n' ' ')"
        echo "dev $(ls /dev | tr '\n' ' ')"
        echo "sys $(test -e /sys/kernel && echo yes || echo no)"
        echo "ro $(echo 1 2>/dev/null > /proc/sys/kernel/ostype && echo writable || echo refused)"
        echo "sysrq $(grep -c ' /proc/sysrq-trigger ro,' /proc/self/mountinfo)"
        printf 'crlf\n' | od -c | head -1
        touch /task/mine && ls -n /task/mine | cut -d' ' -f3-4 | tr -s ' '
    """
    out = await vm_jobs.sh(script)
    assert out.result.exit_code == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert "uid 1000 1000" in lines
    assert "pid1 sh" in lines  # PID 1 of its own pid namespace, as on ns
    assert "ppid 0" in lines
    assert "nnp 1" in lines
    assert "seccomp 2" in lines
    assert "fds 0 1 2 3 " in lines  # 3: ls's own directory
    assert "sys no" in lines
    assert "ro refused" in lines
    assert "sysrq 1" in lines  # the guest kernel has one (the host's may not): read-only
    assert any(line.endswith(r"c   r   l   f  \n") for line in lines), lines
    dev = next(line for line in lines if line.startswith("dev "))
    assert {"null", "zero", "urandom", "pts", "shm"} <= set(dev.split())
    upper = vm_jobs.workdir / "upper" / "task" / "mine"
    assert (upper.stat().st_uid, upper.stat().st_gid) == (1000, 1000)


@pytest.mark.anyio
async def test_two_vms_at_once_leave_no_trace(area: ScratchArea) -> None:
    """virtiofsd's pid files (named after its socket, never removed) stay in the helper's
    namespace: concurrent runs do not collide on them, and the host keeps none."""
    before = virtiofsd_pid_files()
    ex = usable("vm")
    workdirs = [area.new_workdir() for _ in range(2)]
    codes: list[int] = []

    async def one(wd: Path) -> None:
        codes.append((await Jobs(area, wd, ex).sh("exit 7")).result.exit_code)

    try:
        async with anyio.create_task_group() as tg:
            for wd in workdirs:
                tg.start_soon(one, wd)
    finally:
        for wd in workdirs:
            remove_tree(wd)
    assert codes == [7, 7]
    assert virtiofsd_pid_files() == before


def test_prepared_parts_serve_without_apt(parts: guest.GuestParts, tmp_path: Path) -> None:
    """With apt unusable (no apt-cache in PATH here), parts prepared before still boot."""
    state = parts.dir.parent.parent.parent
    code = (
        "import sys; from pathlib import Path; from repeatr.vm import guest;"
        f"print(guest.prepare(Path({os.fspath(state)!r})).dir)"
    )
    done = subprocess.run([sys.executable, "-c", code], env={"PATH": os.fspath(tmp_path)},
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert (Path(done.stdout.strip()) / "initramfs").exists()


@pytest.mark.anyio
async def test_the_host_disks_reserve_stops_a_vm_job(area: ScratchArea, tmp_path: Path) -> None:
    """Without limits.disk, a guest filling the host's disk is stopped at its reserve,
    as on every executor: qemu killed, the report says "reserve" (not a timeout)."""
    small = tmp_path / "small"
    small.mkdir()
    libc.mount("tmpfs", os.fspath(small), "tmpfs", 0, "size=100m")
    try:
        jobs = Jobs(area, small / "run", usable("vm"))
        (small / "run").mkdir()
        fill = ("i=0; while [ $i -lt 200 ]; do head -c 1048576 /dev/zero >>/task/big || break; "
                "i=$((i+1)); done; echo filled; sleep 1000")
        out = await jobs.run(jobs.job("sh", "-c", fill, limits=Limits(timeout=120)))
        assert (out.result.disk, out.result.timed_out) == ("reserve", False), out.result
        assert (out.result.exit_code, out.result.signal) == (137, 9)
        assert vm_processes(small / "run") == []
    finally:
        libc.umount2(os.fspath(small), libc.MNT_DETACH)


def test_all_capabilities_are_repeatrs_own_in_the_guest_too(area: ScratchArea,
                                                            workdir: Path) -> None:
    """The guest kernel could grant every capability it knows; the job gets those in
    repeatr's bounding set, as on the host's kernel (here: a child that dropped
    CAP_MKNOD from its bounding set asks for ALL)."""
    jobs = Jobs(area, workdir, VmExecutor())
    job = jobs.job("true", uid=0, gid=0, capabilities=frozenset({"ALL"}))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc.capbset_drop(27)  # CAP_MKNOD
            os.write(w, VmExecutor().job_files(job)["caps"])
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        mask = int(f.read())
    os.waitpid(pid, 0)
    with open("/proc/self/status") as f:
        ours = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd"))
    assert mask == ours & ~(1 << 27) & ((1 << 41) - 1)
