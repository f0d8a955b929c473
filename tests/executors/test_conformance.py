"""One conformance suite, run over every executor that exists.

Every test runs a real job in real namespaces over an overlay of the busybox
rootfs; the autouse ``host_unchanged`` fixture then checks the host's mount
table, network namespaces and the (lower) rootfs are as before. What a
formula can express is checked again through the library runner, on both
anyio backends: ``tests/run/test_conformance_runner.py``.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import anyio
import pytest

from repeatr.assemble.ops import Bind, Tmpfs
from repeatr.errors import AssemblyError, Category, ExecutorError, JobInvalid
from repeatr.executors.base import Isolation
from repeatr.linux.capability import CAPABILITIES
from tests.executors.conftest import Jobs
from tests.rootfs import processes_with

pytestmark = [pytest.mark.root, pytest.mark.anyio]


async def test_hello_stdout_and_stderr(jobs: Jobs) -> None:
    out = await jobs.sh("echo hello; echo oops >&2; echo world")
    assert out.result.exit_code == 0
    assert out.stdout == b"hello\nworld\n"
    assert out.stderr == b"oops\n"
    # stdout and stderr are separate pipes: no order between them
    assert sorted(out.lines) == [
        ("stderr", b"oops\n"), ("stdout", b"hello\n"), ("stdout", b"world\n"),
    ]


@pytest.mark.parametrize("code", [0, 3])
async def test_exit_code(jobs: Jobs, code: int) -> None:
    out = await jobs.sh(f"exit {code}")
    assert out.result.exit_code == code
    assert out.result.signal is None


async def test_self_kill(jobs: Jobs) -> None:
    """kill -9 $$: 128+9, unless the job is PID 1 (init ignores it from inside)."""
    out = await jobs.sh("kill -9 $$; echo survived")
    if jobs.executor.capabilities().job_is_pid1:
        assert (out.result.exit_code, out.stdout) == (0, b"survived\n")
    else:
        assert (out.result.exit_code, out.result.signal) == (137, 9)
        assert out.stdout == b""


async def test_killed_from_outside(jobs: Jobs) -> None:
    """A job killed by signal N exits 128+N, for every executor."""
    if not jobs.executor.capabilities().host_processes:
        pytest.skip("the job's processes are not the host's (gVisor's Sentry, a VM's guest "
                    "kernel): none to kill from the host")
    marker = f"repeatr-kill-{uuid.uuid4().hex}"

    async def killer() -> None:
        with anyio.fail_after(10):
            while not (pids := processes_with(marker)):  # noqa: ASYNC110 (polling /proc)
                await anyio.sleep(0.02)
        for pid in pids:
            os.kill(pid, 9)

    async with anyio.create_task_group() as tg:
        tg.start_soon(killer)
        out = await jobs.run(jobs.job("sh", "-c", "sleep 100; exit 0", marker))
    assert (out.result.exit_code, out.result.signal) == (137, 9)


async def test_env_exactly_as_given(jobs: Jobs) -> None:
    env = (("ZED", "last first"), ("PATH", "/bin:/usr/bin"), ("A", "1"), ("EMPTY", ""))
    out = await jobs.run(jobs.job("env", env=env))
    expected = [f"{k}={v}" for k, v in env]
    if jobs.executor.capabilities().sets_home:  # runc, crun, runsc add HOME when absent
        expected.append("HOME=/home/reuser")
    lines = out.stdout.decode().splitlines()
    if not jobs.executor.capabilities().env_order:  # runsc: same variables, its own order
        lines, expected = sorted(lines), sorted(expected)
    assert lines == expected


async def test_cwd_default_is_task(jobs: Jobs) -> None:
    out = await jobs.sh("pwd")
    assert out.stdout == b"/task\n"


async def test_cwd_default_without_cradle(jobs: Jobs) -> None:
    out = await jobs.sh("pwd", cradle=False)
    assert out.stdout == b"/\n"


async def test_cwd_explicit(jobs: Jobs) -> None:
    out = await jobs.sh("pwd", cwd="/etc")
    assert out.stdout == b"/etc\n"


async def test_cwd_created_by_cradle(jobs: Jobs) -> None:
    out = await jobs.sh("pwd; stat -c '%a %u %g %Y' . /tmp $HOME", cwd="/a/b/c")
    assert out.stdout.decode().splitlines() == [
        "/a/b/c",
        "755 1000 1000 1262304000",
        "1777 0 0 1262304000",
        "755 1000 1000 1262304000",
    ]


async def test_userinfo_default(jobs: Jobs) -> None:
    out = await jobs.sh("id")
    assert out.stdout == b"uid=1000(reuser) gid=1000(reuser)\n"


async def test_userinfo_custom(jobs: Jobs) -> None:
    out = await jobs.sh("id", uid=4242, gid=4343)
    assert out.stdout == b"uid=4242 gid=4343\n"


async def test_userinfo_root(jobs: Jobs) -> None:
    env = (("PATH", "/bin"), ("HOME", "/root"))
    out = await jobs.sh("id; pwd; echo $HOME", uid=0, gid=0, env=env)
    assert out.stdout == b"uid=0(root) gid=0(root)\n/task\n/root\n"


def _caps(stdout: bytes) -> dict[str, int]:
    return {
        k.rstrip(":"): int(v, 16)
        for k, v in (line.split() for line in stdout.decode().splitlines())
    }


def _host_bounding_set() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd"))


ROUTINE = frozenset({"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"})
ROUTINE_MASK = 1 << 29 | 1 << 5 | 1 << 10


@pytest.mark.parametrize("uid", [1000, 0])
async def test_capabilities_routine(jobs: Jobs, uid: int) -> None:
    out = await jobs.sh("grep -E '^Cap|NoNewPrivs' /proc/self/status", uid=uid, gid=uid,
                        capabilities=ROUTINE)
    caps = _caps(out.stdout)
    if uid != 0 and jobs.executor.capabilities().user_space_kernel:
        # gVisor has no ambient capabilities: a non-root job keeps only the bounding set
        assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == (0, 0, ROUTINE_MASK)
    else:
        for key in ("CapEff", "CapPrm", "CapBnd"):
            assert caps[key] == ROUTINE_MASK, key
    if not jobs.executor.capabilities().user_space_kernel:  # gVisor's /proc lacks the line
        assert caps["NoNewPrivs"] == 1


async def test_capabilities_none_as_root(jobs: Jobs) -> None:
    out = await jobs.sh("grep ^Cap /proc/self/status; touch /etc/x", uid=0, gid=0)
    caps = _caps(out.stdout)
    assert caps["CapEff"] == caps["CapBnd"] == 0
    assert out.result.exit_code == 0  # the overlay upper is root's: DAC lets uid 0 write /etc


NETWORK_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_NET_RAW"})


def _most_caps(jobs: Jobs) -> frozenset[str]:
    """Every capability the executor grants: ALL, or (sharing the host's network:
    chroot) all but the network ones, which it refuses."""
    if Isolation.NET in jobs.executor.capabilities().isolates:
        return frozenset({"ALL"})
    return frozenset(CAPABILITIES) - NETWORK_CAPS


async def test_capabilities_all(jobs: Jobs) -> None:
    if Isolation.NET not in jobs.executor.capabilities().isolates:
        for caps in (frozenset({"ALL"}), *(frozenset({c}) for c in NETWORK_CAPS)):
            with pytest.raises(ExecutorError) as info:
                await jobs.sh("true", uid=0, gid=0, capabilities=caps)
            assert "host's network" in info.value.message
        return
    out = await jobs.sh("grep ^CapEff /proc/self/status", uid=0, gid=0,
                        capabilities=frozenset({"ALL"}))
    last = jobs.executor.capabilities().last_capability
    expected = _host_bounding_set() & ((1 << (last + 1)) - 1 if last is not None else -1)
    assert _caps(out.stdout)["CapEff"] == expected


async def test_hostname(jobs: Jobs) -> None:
    if not jobs.executor.capabilities().hostname:
        with pytest.raises(ExecutorError):
            await jobs.sh("hostname", hostname="boxy")
        return
    out = await jobs.sh("hostname", hostname="boxy")
    assert out.stdout == b"boxy\n"


async def test_pid_namespace(jobs: Jobs) -> None:
    out = await jobs.sh("echo $$; ls /proc | grep -c '^[0-9]'")
    pid, count = (int(x) for x in out.stdout.split())
    if Isolation.PID in jobs.executor.capabilities().isolates:
        assert pid == 1
        assert count <= 3  # sh, ls, grep
    else:
        assert pid != 1


async def test_network(jobs: Jobs) -> None:
    out = await jobs.sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    links = out.stdout.decode().split()
    if jobs.executor.capabilities().networks >= {"none"}:
        assert links == ["lo"]
        up = await jobs.sh("ip link show lo")
        assert b"UP" in up.stdout
    else:
        assert len(links) >= 1


async def test_dev(jobs: Jobs) -> None:
    out = await jobs.sh(
        "echo x > /dev/null && head -c 7 /dev/urandom | wc -c && ls /dev | tr '\\n' ' ' && echo "
        "&& test -d /dev/pts && test -c /dev/pts/ptmx && test -k /dev/shm && echo ok"
    )
    lines = out.stdout.decode().splitlines()
    assert lines[0].strip() == "7"
    assert set(lines[1].split()) >= {"null", "zero", "full", "random", "urandom", "tty",
                                     "pts", "shm", "fd", "stdin", "stdout", "stderr", "ptmx"}
    assert lines[2] == "ok"


async def test_writing_everywhere_leaves_lower_unchanged(jobs: Jobs) -> None:
    script = (
        "for d in / /bin /etc /usr/bin /root /home /sbin; do echo x > $d/written || exit 1; done; "
        "rm /bin/ls && echo hacked >> /etc/passwd && chmod 700 /etc && ln -sf /x /bin/cat "
        "&& mkdir -p /usr/lib/new && touch -d @0 /bin/busybox && echo done"
    )
    out = await jobs.sh(script, uid=0, gid=0, capabilities=_most_caps(jobs))
    assert (out.result.exit_code, out.stdout) == (0, b"done\n"), out.stderr
    assert (jobs.workdir / "upper" / "etc" / "written").exists()
    # the autouse host_unchanged fixture checks the lower rootfs digest


async def test_cancel_job_ignoring_sigterm(jobs: Jobs) -> None:
    marker = f"repeatr-cancel-{uuid.uuid4().hex}"
    job = jobs.job("sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done", marker)
    ready = anyio.Event()
    on_host = jobs.on_host(marker)

    async def on_output(stream: str, line: bytes) -> None:
        if line == b"ready\n":
            ready.set()

    cancelled_at = 0.0
    with anyio.move_on_after(60) as scope:  # a VM boots in several seconds under TCG
        async with anyio.create_task_group() as tg:

            async def cancel_when_ready() -> None:
                nonlocal cancelled_at
                await ready.wait()
                if on_host is not None:
                    assert processes_with(on_host)
                cancelled_at = time.monotonic()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_ready)
            await jobs.executor.run(job, on_output=on_output)
    assert not scope.cancelled_caught, "the job never became ready"
    assert time.monotonic() - cancelled_at < 5, "cancelling waited for the job to honour SIGTERM"
    assert processes_with(on_host or marker) == []


async def test_missing_exec(jobs: Jobs) -> None:
    with pytest.raises(JobInvalid) as info:
        await jobs.run(jobs.job("no-such-command"))
    assert info.value.category == Category.JOB_INVALID


async def test_exec_not_executable(jobs: Jobs) -> None:
    with pytest.raises(JobInvalid):
        await jobs.run(jobs.job("/etc/passwd"))


@pytest.mark.parametrize("cwd", ["/no/such/dir", "/etc/passwd"])
async def test_bad_cwd(jobs: Jobs, cwd: str) -> None:
    with pytest.raises(JobInvalid) as info:
        await jobs.run(jobs.job("pwd", cwd=cwd, cradle=False))
    assert info.value.exit_code == 40


@pytest.fixture
def trap_layer(workdir: Path) -> Path:
    """A lower layer whose symlinks point at the host: /etc, /, and ../../.."""
    layer = workdir / "trap"
    (layer / "deep").mkdir(parents=True)
    (layer / "evil").symlink_to("/etc")
    (layer / "deep" / "up").symlink_to("../../../../../..")
    return layer


@pytest.mark.parametrize(
    "dest", ["/evil", "/evil/repeatr-mounted-here", "/deep/up/etc"]
)
async def test_symlink_mount_destination_is_refused(
    jobs: Jobs, trap_layer: Path, dest: str
) -> None:
    before = sorted(os.listdir("/etc"))
    with pytest.raises(AssemblyError) as info:
        await jobs.run(jobs.job("true", lowers=(trap_layer,), extra_mounts=(Tmpfs(dest),)))
    assert info.value.category == Category.ASSEMBLY_INVALID
    assert "symlink" in str(info.value)
    assert sorted(os.listdir("/etc")) == before


async def test_cradle_cwd_through_symlink_is_refused(jobs: Jobs, trap_layer: Path) -> None:
    # a cradle path the image made unusable is a bad job (40), since 734a797
    with pytest.raises(JobInvalid):
        await jobs.run(jobs.job("true", lowers=(trap_layer,), cwd="/evil/repeatr-cwd"))
    assert "repeatr-cwd" not in os.listdir("/etc")


async def test_bind_ro_is_recursive(jobs: Jobs) -> None:
    """/sys/fs holds the host's cgroup tmpfs (rw): through a ro bind it is ro too."""
    out = await jobs.sh(
        "touch /mnt/fs/cgroup/x; echo $?; touch /mnt/fs/x; echo $?",
        uid=0, gid=0, capabilities=_most_caps(jobs),
        extra_mounts=(Bind("/sys/fs", "/mnt/fs", ro=True, recursive=True),),
    )
    assert out.stdout == b"1\n1\n"
    assert b"Read-only file system" in out.stderr


async def test_bind_rw(jobs: Jobs, workdir: Path) -> None:
    shared = workdir / "shared"
    shared.mkdir()
    (shared / "in").write_text("from host\n")
    out = await jobs.sh(
        "cat /mnt/shared/in && echo from job > /mnt/shared/out",
        uid=0, gid=0, extra_mounts=(Bind(os.fspath(shared), "/mnt/shared", ro=False),),
    )
    assert out.stdout == b"from host\n"
    assert (shared / "out").read_text() == "from job\n"


async def test_nothing_under_a_host_bind(jobs: Jobs, workdir: Path) -> None:
    with pytest.raises(AssemblyError):
        await jobs.run(jobs.job("true", extra_mounts=(
            Bind(os.fspath(workdir), "/mnt/host", ro=False), Tmpfs("/mnt/host/sub"),
        )))
    assert not (workdir / "sub").exists()


async def test_outputs_visible_while_mounts_exist(jobs: Jobs) -> None:
    """on_finished sees the container's files through the helper's root view."""
    seen: list[str] = []

    async def on_finished(result: object, view: Path) -> None:
        seen.append((view / "task" / "out.txt").read_text())
        seen.append((view / "proc").is_dir().__str__())

    async def on_output(stream: str, line: bytes) -> None:
        pass

    job = jobs.job("sh", "-c", "echo result > out.txt")
    result = await jobs.executor.run(job, on_output=on_output, on_finished=on_finished)
    assert result.exit_code == 0
    assert seen[0] == "result\n"
