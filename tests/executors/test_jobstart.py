"""The job's start (``repeatr.executors.jobstart``, ``repeatr/linux/_jobstart.c``):
ns and chroot jobs are started by clone(CLONE_VM | CLONE_VFORK), not by a
fork of the helper's interpreter. What the job sees of that start, and its
failures, on a real kernel (the conformance, hardening and attack suites
cover the rest: ids, capabilities, seccomp, /proc, the old root)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from repeatr.errors import AssemblyError, Category, JobInvalid
from repeatr.executors.base import Executor, JobResult
from repeatr.linux import _jobstart, capability, libc
from tests.executors.conftest import Jobs, usable

pytestmark = [pytest.mark.root, pytest.mark.anyio]

#: Minor page faults of a job that starts ``cat``: ~90 from a CLONE_VM child
#: (the exec'd binaries' own), ~480 from a fork of the helper's interpreter
#: (its copy-on-write pages, touched as the child ran Python before execve).
MAX_START_FAULTS = 250


@pytest.fixture(params=["ns", "chroot"])
def executor(request: pytest.FixtureRequest) -> Executor:
    return usable(request.param)


def _status(text: bytes) -> dict[str, str]:
    fields = (line.split(":", 1) for line in text.decode().splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields}


async def test_job_is_not_a_copy_of_the_helper(jobs: Jobs) -> None:
    # sh execs its last command: PID 1, the job's process from its clone on, is cat.
    out = await jobs.sh("cat /proc/self/stat")
    fields = out.stdout.split(b")")[-1].split()
    pid, minor_faults = out.stdout.split()[0], int(fields[7])
    assert pid == b"1"
    assert minor_faults < MAX_START_FAULTS, out.stdout


async def test_job_starts_with_default_signals(jobs: Jobs) -> None:
    """Nothing blocked (the helper blocks every signal around the clone),
    and none of the signals the interpreter ignores stays ignored."""
    out = await jobs.sh("cat /proc/self/status")
    status = _status(out.stdout)
    assert int(status["SigBlk"], 16) == 0
    ignored = int(status["SigIgn"], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        assert not ignored & 1 << (sig - 1), sig.name


async def test_exec_format_error_is_the_jobs(jobs: Jobs, workdir: Path) -> None:
    layer = workdir / "garbage"
    layer.mkdir()
    (layer / "not-a-program").write_bytes(b"\x00\x01 neither ELF nor a script\n")
    (layer / "not-a-program").chmod(0o755)
    with pytest.raises(JobInvalid) as info:
        await jobs.run(jobs.job("/not-a-program", lowers=(layer,)))
    assert info.value.category == Category.JOB_INVALID
    assert "/not-a-program" in str(info.value)


async def test_exec_in_path_is_found_as_the_jobs_user(jobs: Jobs, workdir: Path) -> None:
    """An executable in a PATH dir the job's user cannot search is skipped."""
    layer = workdir / "locked"
    (layer / "locked").mkdir(parents=True)
    (layer / "locked" / "true").symlink_to("/bin/true")
    (layer / "locked").chmod(0o700)  # root's
    env = (("PATH", "/locked:/bin"),)
    out = await jobs.run(jobs.job("true", env=env))
    assert out.result.exit_code == 0
    with pytest.raises(JobInvalid) as info:
        await jobs.run(jobs.job("true", lowers=(layer,), env=(("PATH", "/locked"),)))
    assert "not found in PATH=/locked" in str(info.value)


async def test_exec_path_that_is_a_directory(jobs: Jobs) -> None:
    with pytest.raises(JobInvalid) as info:
        await jobs.run(jobs.job("/bin"))
    assert "no such file in the container" in str(info.value)


@pytest.mark.parametrize("outputs", [(), ("/",)])
async def test_mounts_are_released_only_for_packing(
    jobs: Jobs, outputs: tuple[str, ...]
) -> None:
    """With outputs, the parent packs a root without repeatr's mounts (``/dev``
    unmounted); without, nothing is packed and the helper leaves its mounts to
    its namespace's end (``repeatr.assemble.release``: ~1.5 ms a job)."""
    seen: list[bool] = []

    async def on_finished(result: JobResult, view: Path) -> None:
        seen.append((view / "dev" / "null").exists())

    async def on_output(stream: str, line: bytes) -> None:
        pass

    job = jobs.job("true", outputs=outputs)
    result = await jobs.executor.run(job, on_output=on_output, on_finished=on_finished)
    assert result.exit_code == 0
    assert seen == [not outputs]


async def test_proc_mount_point_through_a_symlink_is_refused(
    jobs: Jobs, workdir: Path
) -> None:
    """An image whose /proc is a symlink to a host-looking path: the job's
    /proc is never mounted there (the C child opens each component without
    following a symlink, in its own mount namespace)."""
    layer = workdir / "trap"
    layer.mkdir()
    (layer / "proc").symlink_to("/etc")
    before = sorted(os.listdir("/etc"))
    with pytest.raises(AssemblyError) as info:
        await jobs.run(jobs.job("true", lowers=(layer,)))
    assert info.value.category == Category.ASSEMBLY_INVALID
    assert "symlink" in str(info.value)
    assert sorted(os.listdir("/etc")) == before


def _start_in_private_root(root: Path, out: int, argv: list[str]) -> int:
    """In a forked child of the test: ``argv`` (an absolute path first) started
    by the C child, in a root that is a bind of the host's, in a mount
    namespace of this child's own; the job's exit code (99: it did not start)."""
    libc.unshare(libc.CLONE_NEWNS)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount("/", root, None, libc.MS_BIND | libc.MS_REC)
    os.dup2(out, 1)
    devnull = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    errr, errw = os.pipe2(os.O_CLOEXEC)
    last_cap = capability.running_last_cap()
    pid = _jobstart.start_job(
        root=os.fsencode(root), argv=[os.fsencode(a) for a in argv], envp=[],
        candidates=[os.fsencode(argv[0])], slash=True, cwd=b"/", procs=[], cgroup_fds=[],
        close_fds=[errr], stdin_fd=devnull, errw=errw, uid=0, gid=0,
        caps=(1 << (last_cap + 1)) - 1, last_cap=last_cap, seccomp=b"",
    )
    os.close(errw)
    failure = os.read(errr, _jobstart.FAILURE_SIZE)
    _, status = os.waitpid(pid, 0)
    return 99 if failure else os.waitstatus_to_exitcode(status)


def _job_of_a_child(
    tmp_path: Path, argv: list[str], prepare: Callable[[], None]
) -> tuple[int, bytes]:
    """``argv`` started by the C child in a forked child of the test that
    ``prepare``d itself first: the job's exit code and stdout."""
    root = tmp_path / "root"
    root.mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (a child)
        code = 98
        try:
            os.close(r)
            prepare()
            code = _start_in_private_root(root, w, argv)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out


def test_c_child_resets_what_its_caller_ignores_and_blocks(tmp_path: Path) -> None:
    """The C child itself, whatever its caller's signal state (the helper
    inherits its invoker's, through the server): every signal back to
    default and none blocked at the exec, as crun does; SIG_IGN and the
    mask survive execve. SIGTERM is one the old child reset, SIGQUIT and
    SIGUSR1 are not; SIGUSR2 blocked is the caller's mask."""

    def hostile_caller() -> None:
        for sig in (signal.SIGQUIT, signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})

    code, out = _job_of_a_child(tmp_path, ["/bin/cat", "/proc/self/status"], hostile_caller)
    assert code == 0, out
    status = _status(out)
    assert int(status["SigBlk"], 16) == 0, status["SigBlk"]
    assert int(status["SigIgn"], 16) == 0, status["SigIgn"]


def test_c_child_passes_on_no_descriptor_but_stdio(tmp_path: Path) -> None:
    """An inheritable descriptor of the caller's (a slip in the helper, or
    one a replay's invoker left open) is not the job's: everything above 2
    is close-on-exec in the C child, as runc makes it."""
    secret = tmp_path / "secret"
    secret.write_text("the host's\n")
    fd_number = 57

    def caller_with_a_stray_fd() -> None:
        fd = os.open(secret, os.O_RDONLY)  # inheritable: no O_CLOEXEC
        os.dup2(fd, fd_number)  # inheritable too

    code, out = _job_of_a_child(
        tmp_path, ["/bin/readlink", f"/proc/self/fd/{fd_number}"], caller_with_a_stray_fd
    )
    assert os.fsencode(secret) not in out
    assert code == 1, out  # readlink: no such descriptor
