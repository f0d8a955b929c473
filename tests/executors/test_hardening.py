"""Regressions for issue #11: what a hostile job could reach of the host.

Each test runs a real job, on every executor that promises to stop the
attack, with a harmless payload (a sysctl written back with its own value, a
node for /dev/null's numbers, signal 0, a marker file). Every one of them
failed on the code before the fix it guards.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import repeatr
from repeatr.assemble.ops import Bind
from repeatr.executors.oci import OciExecutor
from repeatr.linux import libc
from tests.executors.conftest import Jobs
from tests.rootfs import processes_with

pytestmark = [pytest.mark.root, pytest.mark.anyio]

ROOT: dict[str, Any] = {"uid": 0, "gid": 0, "env": (("PATH", "/bin:/sbin:/usr/bin"), ("HOME", "/root"))}
ROUTINE = frozenset({"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"})
NULL_DEVICE = os.makedev(1, 3)  # /dev/null's numbers: opening it through a ware is harmless


def _not_gvisor(jobs: Jobs, why: str) -> None:
    if jobs.executor.capabilities().user_space_kernel:
        pytest.skip(f"gVisor: {why}")


# --- 1. /proc: masked and read-only ------------------------------------------------
SYSCTL_WRITE_BACK = (
    "for f in /proc/sys/kernel/core_pattern /proc/sys/vm/swappiness; do "
    "v=$(cat $f) && echo \"$v\" > $f 2>/dev/null && echo \"wrote $f\"; done; "
    # Its mount, not `test -w`: busybox's test says root may write anything. (No
    # write either: a writable one would act on the kernel.)
    "test -e /proc/sysrq-trigger && ! grep -q ' /proc/sysrq-trigger ro,' /proc/self/mountinfo "
    "&& echo 'writable /proc/sysrq-trigger'; "
    "echo checked"
)


async def test_root_job_writes_no_sysctl(jobs: Jobs) -> None:
    """uid 0 writes sysctls without any capability unless /proc/sys is read-only."""
    _not_gvisor(jobs, "/proc/sys is the Sentry's, not the host's")
    out = await jobs.sh(SYSCTL_WRITE_BACK, capabilities=ROUTINE, **ROOT)
    assert out.stdout == b"checked\n", out.stdout


async def test_proc_secrets_are_masked(jobs: Jobs) -> None:
    _not_gvisor(jobs, "/proc is the Sentry's")
    out = await jobs.sh(
        "for f in /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug; do "
        "test -e $f || continue; test -c $f && test ! -s $f || echo \"readable $f\"; done; "
        "echo checked",
        capabilities=ROUTINE, **ROOT,
    )
    assert out.stdout == b"checked\n", out.stdout


FRESH_PROC = (
    "unshare -Urpfm --mount-proc sh -c "
    "'v=$(cat /proc/sys/vm/swappiness) && echo $v > /proc/sys/vm/swappiness "
    "&& echo wrote'; echo checked"
)


@pytest.mark.parametrize("seccomp", [True, False], ids=["seccomp", "kernel-alone"])
async def test_fresh_proc_in_a_user_namespace_is_refused(jobs: Jobs, seccomp: bool) -> None:
    """A new proc (in a user and pid namespace of the job's own) would be unmasked
    and writable: the kernel refuses it while the masked one is all there is in
    the job's mount namespace, seccomp or not (on vm the initramfs's own /proc
    once was there too, below the job's root, and only seccomp stopped it)."""
    _not_gvisor(jobs, "/proc is the Sentry's")
    out = await jobs.sh(
        FRESH_PROC,
        capabilities=ROUTINE | {"CAP_SETFCAP"},  # governor's: may map uid 0 (5.12+)
        seccomp=seccomp,
        **ROOT,
    )
    assert out.stdout == b"checked\n", out.stdout


# --- 2. nodev, nosuid on every mount of a ware or a host path ------------------------
def _node(path: Path) -> Path:
    os.mknod(path, stat.S_IFCHR | 0o666, NULL_DEVICE)
    os.chmod(path, 0o666)
    return path


@pytest.fixture
def dev_layer(workdir: Path) -> Path:
    """A ware-like lower layer holding a char device node (/dev/null's numbers)."""
    layer = workdir / "devlayer"
    layer.mkdir()
    _node(layer / "node")
    return layer


@pytest.fixture
def dev_host_dir(workdir: Path) -> Iterator[Path]:
    """A host dir holding a device node, on a tmpfs without nodev (as a `mount:` input
    might be): only the bind's own flags can stop the node."""
    host = workdir / "devhost"
    host.mkdir()
    libc.mount("tmpfs", host, "tmpfs", 0, "size=64k,mode=755")
    try:
        _node(host / "node")
        yield host
    finally:
        libc.umount2(host, libc.MNT_DETACH)


OPEN_NODES = (
    "for n in \"$@\"; do test -c $n && echo x > $n && echo \"opened $n\"; done; echo checked"
)


async def test_device_node_in_a_ware_opens_nothing(
    jobs: Jobs, dev_layer: Path, dev_host_dir: Path
) -> None:
    binds = (
        Bind(os.fspath(dev_host_dir), "/mnt/ro", ro=True),
        Bind(os.fspath(dev_host_dir), "/mnt/rw", ro=False),
    )
    out = await jobs.run(jobs.job(
        "sh", "-c", OPEN_NODES, "sh", "/node", "/mnt/ro/node", "/mnt/rw/node",
        lowers=(dev_layer,), extra_mounts=binds,
    ))
    assert out.stdout == b"checked\n", out.stdout


async def test_device_node_made_by_the_job_opens_nothing(jobs: Jobs) -> None:
    """With CAP_MKNOD, a node made in the root, /tmp or /dev opens nothing; the
    /dev nodes repeatr binds from the host still work."""
    places = ["/n", "/tmp/n"]
    if not isinstance(jobs.executor, OciExecutor):  # runc, crun, runsc make their own /dev
        places.append("/dev/n")
    mknods = "".join(f"mknod {p} c 1 3 && chmod 666 {p}; " for p in places)
    out = await jobs.run(jobs.job(
        "sh", "-c", mknods + "echo x > /dev/null && echo 'null works'; " + OPEN_NODES,
        "sh", *places, capabilities=frozenset({"CAP_MKNOD"}), **ROOT,
    ))
    assert out.stdout == b"null works\nchecked\n", (out.stdout, out.stderr)


# --- 3. the helper imports nothing from the caller's cwd or environment ----------------
@pytest.fixture
def trap_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cwd and a PYTHONPATH full of modules the helper imports, each writing a marker."""
    marker = tmp_path / "imported"
    for name in ("signal", "select", "errno", "marshal", "ctypes", "repeatr"):
        code = f"open({os.fspath(marker)!r}, 'a').write({name!r} + '\\n')\n"
        if name == "repeatr":
            (tmp_path / name).mkdir()
            (tmp_path / name / "__init__.py").write_text(code)
        else:
            (tmp_path / f"{name}.py").write_text(code)
    (tmp_path / "startup.py").write_text(f"open({os.fspath(marker)!r}, 'a').write('startup')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.fspath(tmp_path))
    monkeypatch.setenv("PYTHONSTARTUP", os.fspath(tmp_path / "startup.py"))
    return marker


async def test_helper_imports_nothing_from_cwd(jobs: Jobs, trap_modules: Path) -> None:
    out = await jobs.sh("echo ran")
    assert out.stdout == b"ran\n"
    assert not await anyio.Path(trap_modules).exists(), "the helper imported from the cwd"


def test_helper_command_replays_from_anywhere(tmp_path: Path) -> None:
    """The --debug command line is self-contained: run from another cwd, with no
    PYTHONPATH, it finds repeatr (here: the helper, told a closed fd, exits 1)."""
    from repeatr.executors.ns import NsExecutor

    lines: list[str] = []
    ex = NsExecutor(on_debug=lines.append)
    argv = ex.command(3)
    assert argv[1:3] == ["-I", "-S"]
    probe = argv[4].replace(
        "from repeatr.executors.forkserver import leave, main; leave(main(sys.argv))",
        "import repeatr.executors.forkserver as s; print(s.__file__)",
    )
    res = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], cwd=tmp_path, env={},
        capture_output=True, text=True, check=True,
    )
    assert res.stdout.strip() == os.path.join(os.path.dirname(repeatr.__file__), "executors",
                                              "forkserver.py")


# --- 4, 5. the job sees, signals and reaches only its own processes -------------------
@pytest.fixture
def host_process(workdir: Path) -> Iterator[tuple[int, str]]:
    """A uid-1000 host process (as the job's user) whose cwd holds a marker file."""
    where = workdir / "hostcwd"
    where.mkdir()
    os.chmod(workdir, 0o755)
    marker = f"marker-{uuid.uuid4().hex}"
    (where / marker).write_text("host\n")
    proc = subprocess.Popen(["sleep", "60"], cwd=where, user=1000, group=1000, extra_groups=[])
    try:
        yield proc.pid, marker
    finally:
        proc.kill()
        proc.wait()


async def test_host_processes_are_out_of_reach(
    jobs: Jobs, host_process: tuple[int, str]
) -> None:
    """Neither a host process's files (through /proc/PID/cwd) nor a signal (CAP_KILL)."""
    pid, marker = host_process
    out = await jobs.sh(
        f"cat /proc/[0-9]*/cwd/{marker} 2>/dev/null; "
        f"kill -0 {pid} 2>/dev/null && echo 'signalled {pid}'; echo checked",
        capabilities=ROUTINE,
    )
    assert out.stdout == b"checked\n", out.stdout


async def test_job_cannot_kill_its_helper(jobs: Jobs) -> None:
    """The helper is outside the job's pid namespace: its parent pid is 0."""
    out = await jobs.sh(
        "echo ppid $PPID; [ \"$PPID\" != 0 ] && kill -9 $PPID; sleep 0.2; echo alive",
        capabilities=ROUTINE,
    )
    if jobs.executor.capabilities().job_is_pid1:
        assert out.stdout == b"ppid 0\nalive\n"
    assert out.result.exit_code == 0


async def test_daemons_die_with_the_job(jobs: Jobs) -> None:
    marker = f"repeatr-daemon-{uuid.uuid4().hex}"
    out = await jobs.run(jobs.job(
        "sh", "-c", "setsid sh -c 'sleep 100' \"$1\" </dev/null >/dev/null 2>&1 & echo started",
        "sh", marker,
    ))
    assert out.stdout == b"started\n"
    assert processes_with(marker) == []


async def test_old_root_is_gone(jobs: Jobs) -> None:
    """pivot_root and a detached old root: `..` from / is /, PID 1's root is the job's,
    and no mount outside the container is in the job's mount table."""
    _not_gvisor(jobs, "runsc's own root, /proc and /sys")
    out = await jobs.sh(
        "cd /../../..; pwd; readlink /proc/1/root; "
        "test \"$(ls -a /proc/1/root/ | tr '\\n' ' ')\" = \"$(ls -a / | tr '\\n' ' ')\" "
        "&& echo same; "
        "cut -d' ' -f5 /proc/self/mountinfo | grep -vxE '/|/(proc|dev|tmp)(/.*)?|/etc/.*' "
        "| head -3; echo checked",
        capabilities=frozenset({"CAP_SYS_CHROOT"}), **ROOT,
    )
    assert out.stdout == b"/\n/\nsame\nchecked\n", out.stdout


# --- what the helper hands down: fds 0, 1, 2 and a session keyring of the job's own -----
KEYRING_PROBE = r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {  /* keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0) */
    printf("%ld\n", syscall(SYS_keyctl, 0, -3, 0));
    return 0;
}
"""


@pytest.fixture(scope="module")
def keyring_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lower layer with /keyring: prints its session keyring's serial (static C)."""
    layer = tmp_path_factory.mktemp("keyring")
    layer.chmod(0o755)  # the merged root takes the top layer's mode
    src = layer.parent / "keyring.c"
    src.write_text(KEYRING_PROBE)
    subprocess.run(["cc", "-static", "-O1", "-o", layer / "keyring", src], check=True)
    return layer


async def test_job_has_its_own_session_keyring(jobs: Jobs, keyring_layer: Path) -> None:
    """The caller's session keyring is not the job's: it could use every key in it."""
    host = await anyio.run_process([keyring_layer / "keyring"])
    out = await jobs.run(jobs.job("/keyring", lowers=(keyring_layer,), **ROOT))
    assert out.result.exit_code == 0
    assert out.stdout != host.stdout, out.stdout

async def test_job_inherits_only_stdio(jobs: Jobs) -> None:
    out = await jobs.sh("ls /proc/$$/fd; :")  # the shell's, while ls runs (no exec: `; :`)
    assert sorted(out.stdout.split()) == [b"0", b"1", b"2"], out.stdout
