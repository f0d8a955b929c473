"""The parent's side of the sandbox helper, shared by every executor.

``run`` asks the sandbox server (``repeatr.executors.server``: one per
invocation, a fresh single-threaded interpreter, never a fork of this
possibly threaded process) for a helper, handing it the helper's control
socket and the job's stdio; then drives the job's
``repeatr.executors.conversation.Conversation`` (the protocol, written once
for this driver and the lean single run's) under anyio: sends the spec,
feeds it what the helper reports, streams the job's stdout/stderr (pipes the
helper and the job inherit) line by line to ``on_output``, all of it
delivered before ``on_finished`` packs the outputs. An executor given no
server (``server=None``) starts one for each job.

Cancellation (or any error) while the helper runs: in a shielded scope with a
timeout, SIGTERM the helper through its pidfd (its handler SIGKILLs the job
and every descendant, runs its cleanups, then exits), then SIGKILL it if it
is still there (the job has PR_SET_PDEATHSIG(SIGKILL) toward the helper).
Only that job's helper: the server and the other jobs go on. If *this*
process dies, even by SIGKILL, the server and every helper see it through a
pidfd of this process and do the same; their mount namespaces go with them.
"""

from __future__ import annotations

import _socket
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from repeatr.assemble.ops import Op
from repeatr.assemble.plan import plan
from repeatr.errors import (
    ExecutorError,
    JobInvalid,
)
from repeatr.executors import seccomp
from repeatr.executors.base import (
    Executor,
    ExecutorName,
    FinishedCallback,
    Isolation,
    JobResult,
    JobSpec,
    OutputCallback,
    check_limits,
)
from repeatr.executors.conversation import Conversation, JobExited, JobPipes
from repeatr.executors.protocol import (
    JobLimits,
    NetworkPolicy,
    OciCommands,
    Spec,
    VmCommands,
    spec_to_json,
)
from repeatr.executors.server import Helper, SandboxServer
from repeatr.executors.spawn import helper_command
from repeatr.linux import cgroups
from repeatr.model.limits import LimitName

if TYPE_CHECKING:
    import anyio

    from repeatr.executors.protocol import Mode

#: The helper's mode for each executor (``repeatr.executors.sandbox``).
MODES: dict[ExecutorName, Mode] = {
    ExecutorName.NS: "ns",
    ExecutorName.CHROOT: "chroot",
    ExecutorName.RUNC: "oci",
    ExecutorName.CRUN: "oci",
    ExecutorName.GVISOR: "oci",
    ExecutorName.VM: "vm",
}


class ControlChannel:
    """The helper's control socket: framed messages both ways.

    Read and written with ``anyio.wait_readable``/``wait_writable`` rather than
    anyio's ``UNIXSocketStream``: on asyncio, cancelling that stream's receive
    just as data arrives makes its reader callback set the result of the
    cancelled future, an ``InvalidStateError`` inside the event loop (seen when
    a run is cancelled while the helper reports the job's exit).
    """

    def __init__(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def receive(self) -> bytes:
        """What has arrived (waiting for something); b"" at its end (or a reset)."""
        import anyio

        while True:
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
            except OSError:
                return b""

    async def send(self, data: bytes) -> None:
        import anyio

        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            view = view[sent:]


class HelperHandle(msgspec.Struct):
    """A helper forked for one job: the process, its control channel, the job's output pipes."""

    process: Helper
    control: ControlChannel
    #: The job's stdout and stderr (None: an interactive job's terminal).
    pipes: JobPipes | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self.process.close()
        if self.pipes is not None:
            self.pipes.close()
            self.pipes = None


async def _pump(
    pipes: JobPipes, fd: int, lock: anyio.Lock, on_output: OutputCallback
) -> None:
    """Read the pipe ``fd`` until its end, line by line to ``on_output``; under ``lock``
    while delivering, so that :func:`_drain` keeps the lines in order."""
    import anyio
    import anyio.lowlevel

    while fd in pipes.open:
        await anyio.wait_readable(fd)
        async with lock:
            for name, line in pipes.read(fd):
                await on_output(name, line)
        await anyio.lowlevel.checkpoint()  # a job that floods its output starves nobody


async def _drain(pipes: JobPipes, locks: dict[int, anyio.Lock], on_output: OutputCallback) -> None:
    """Deliver what the job wrote before it exited (before its outputs are packed)."""
    for fd in pipes.fds:
        async with locks[fd]:
            if fd in pipes.open:
                for name, line in pipes.drain(fd):
                    await on_output(name, line)


async def _finish(
    handle: HelperHandle, spec: Spec, result: JobResult, on_finished: FinishedCallback
) -> None:
    """Hand the exited job's tree to ``on_finished`` (which packs its outputs)."""
    from repeatr.linux.procroot import view_of

    try:
        with view_of(handle.pid, handle.process.pidfd, spec.root) as view:
            await on_finished(result, Path(view))
    except ProcessLookupError as exc:
        raise ExecutorError("the sandbox helper exited before the outputs were packed") from exc


def cgroup_limits() -> frozenset[LimitName]:
    """The limits our own cgroups can enforce here (v1 controllers), plus the timeout."""
    have = cgroups.controllers()
    names = {LimitName(k) for k, ctrl in cgroups.CONTROLLER_FOR.items() if ctrl in have}
    return frozenset({LimitName.TIMEOUT, *names, *disk_limit()})


def disk_limit() -> frozenset[LimitName]:
    """{DISK} where the helper can make a size-limited filesystem (loop devices, mkfs.ext4)."""
    from repeatr.linux import scratch

    if os.path.exists("/dev/loop-control") and scratch.mkfs_path() is not None:
        return frozenset({LimitName.DISK})
    return frozenset()


def job_limits(job: JobSpec) -> JobLimits:
    """``job.limits`` normalised for the helper."""
    lim = job.limits
    if lim is None:
        return JobLimits()
    return JobLimits(
        memory=lim.memory_bytes(), pids=lim.pids, cpu=lim.cpu, timeout=lim.timeout,
        disk=lim.disk_bytes(),
    )





class HelperExecutor(Executor):
    """An executor whose work is done by ``repeatr.executors.sandbox``."""

    def __init__(
        self,
        *,
        python: str = sys.executable,
        kill_timeout: float = 5.0,
        on_debug: Callable[[str], None] | None = None,
        server: SandboxServer | None = None,
    ) -> None:
        super().__init__(on_debug=on_debug)
        self.python = python
        self.kill_timeout = kill_timeout
        #: The invocation's sandbox server (None: one per job).
        self.server = server
        #: Seccomp programs by the job's capabilities (a batch shares the executor).
        self._programs: dict[tuple[str, ...], bytes] = {}

    @property
    def mode(self) -> Mode:
        """The helper's mode, from the executor's name."""
        return MODES[self.name]

    def debug_commands(self, spec: Spec) -> None:
        """Tell ``on_debug`` the spec and the command lines that run, to replay by hand.

        The spec is JSON; saved in a file, ``replay_command(FILE)`` runs the job
        again with stdio on the terminal (while the run's workdir exists:
        ``--keep``).
        """
        if self.on_debug is None:
            return
        import shlex  # only with --debug: a single run's start-up does without it

        self.on_debug(
            f"sandbox server: {shlex.join(self.command(3))}"
            "  (requests on fd 3; each job's helper is a fork of it; `repeatr run`"
            " forks one from itself at start instead)"
        )
        self.on_debug(f"sandbox spec: {spec_to_json(spec)}")
        self.on_debug(
            f"sandbox replay: {shlex.join(self.replay_command('SPEC.json'))}"
            "  (SPEC.json: the sandbox spec line above, saved)"
        )
        oci = spec.oci
        if oci is not None:
            steps = (oci.run,) if oci.style == "run" else (oci.create, oci.start, oci.delete)
            for step in steps:
                self.on_debug(f"runtime: {shlex.join(step)}")

    def check_job(self, job: JobSpec) -> None:
        caps = self.known_capabilities()
        policy = job.network.policy
        if job.network.netns is not None and Isolation.NET not in caps.isolates:
            raise ExecutorError(
                f"executor {self.name} cannot join a prepared network namespace",
                hint="bridge networking needs ns, runc, crun or gvisor",
            )
        if policy is NetworkPolicy.BRIDGE and job.network.netns is None:
            raise ExecutorError("a bridge network needs the namespace repeatr.net prepared")
        # bridge: a namespace of the job's own, joined (the isolation of "none").
        if (NetworkPolicy.NONE if policy is NetworkPolicy.BRIDGE else policy) not in caps.networks:
            raise ExecutorError(
                f"executor {self.name} cannot give a job network {policy.value!r}",
                hint=f"it supports {', '.join(sorted(caps.networks))}; or use the ns executor",
            )
        if job.hostname and not caps.hostname:
            raise ExecutorError(
                f"executor {self.name} cannot set the hostname", hint="use the ns executor"
            )
        if not job.argv:
            raise JobInvalid("the job has no exec")
        check_limits(self, job.limits)

    def helper_mounts(self, job: JobSpec) -> tuple[Op, ...]:
        """The mount operations the helper makes (``job_mounts``, but for an OCI runtime's)."""
        return self.job_mounts(job)

    def runtime_mountpoints(self, job: JobSpec) -> list[str]:
        """Where an OCI runtime mounts in the root (none without one)."""
        return []

    def oci_commands(self, job: JobSpec, cgroup: str) -> OciCommands | None:
        """An OCI runtime's command lines (None: the helper runs the job itself)."""
        return None

    def vm_commands(self, job: JobSpec) -> VmCommands | None:
        """The VM's command lines (None: no VM; ``repeatr.executors.vm``)."""
        return None

    def spec(self, job: JobSpec) -> Spec:
        """The helper's ``Spec`` for ``job``; planned here, so bad mounts fail before it starts."""
        p = plan(self.helper_mounts(job), job.cradle)
        cgroup = cgroups.new_name(os.getpid())
        return Spec(
            mode=self.mode,
            root=os.fspath(job.root),
            mounts=[op.to_json() for op in (*p.mounts, *p.late)],
            cradle=[op.to_json() for op in p.cradle],
            argv=list(job.argv),
            env=[list(kv) for kv in job.env],
            cwd=job.cwd,
            uid=job.uid,
            gid=job.gid,
            hostname=job.hostname,
            capabilities=sorted(job.capabilities),
            network=job.network,
            interactive=job.tty is not None,
            limits=job_limits(job),
            rw=os.fspath(job.rw),
            cgroup=cgroup,
            seccomp=self.seccomp_program(job),
            outputs=list(job.outputs),
            mountpoints=self.runtime_mountpoints(job),
            oci=self.oci_commands(job, cgroup),
            vm=self.vm_commands(job),
        )

    def seccomp_profile(self, job: JobSpec) -> seccomp.Profile | None:
        """The default profile for ``job``'s capabilities; None if the job runs unfiltered."""
        if not job.seccomp:
            return None
        profile = seccomp.for_capabilities(job.capabilities)
        if self.on_debug is not None:
            self.on_debug(profile.describe())
        return profile

    def seccomp_program(self, job: JobSpec) -> bytes | None:
        """The BPF program the helper installs in the job right before execve.

        Kept per capabilities: the profile's rules, its cache key's hash and
        the program are the same for every job with the same ones.
        """
        if job.seccomp and self.on_debug is None:
            key = tuple(job.capabilities)
            program = self._programs.get(key)
            if program is None:
                program = self.compiled(seccomp.for_capabilities(job.capabilities))
                self._programs[key] = program
            return program
        described = self.seccomp_profile(job)  # with --debug: described each time
        return None if described is None else self.compiled(described)

    def compiled(self, profile: seccomp.Profile) -> bytes:
        """``profile`` as a BPF program (cached: ~1 ms; compiling costs ~25 ms)."""
        try:
            return profile.bpf()
        except OSError as e:
            raise ExecutorError(
                f"cannot compile the seccomp profile: {e}",
                hint="install libseccomp (Debian: `apt-get install libseccomp2`)",
            ) from e

    def command(self, fd: int) -> list[str]:
        """The sandbox server's command line, its socket on ``fd``."""
        return helper_command(self.python, "--server", str(fd), str(os.getpid()))

    def replay_command(self, spec_file: str) -> list[str]:
        """The helper's command line that runs the job of the spec saved in ``spec_file``."""
        return helper_command(self.python, "--spec", spec_file)

    async def start_helper(
        self, server: SandboxServer, conversation: Conversation, spec: Spec, tty: int | None
    ) -> HelperHandle:
        """Fork a helper for the job (stdio: pipes to us, or ``tty``) and send it ``spec``."""
        import anyio

        if tty is not None:
            process = await server.fork(tty, tty, tty)
            handle = HelperHandle(process, ControlChannel(process.control))
        else:
            pipes = JobPipes()
            try:
                process = await server.fork(*pipes.child_fds())
            except BaseException:
                pipes.close()
                raise
            pipes.forked()  # the helper's (and the job's) now
            handle = HelperHandle(process, ControlChannel(process.control), pipes)
        conversation.helper_pid = handle.pid
        try:
            await handle.control.send(conversation.start(spec))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.terminate(handle)
            handle.close()
            raise
        return handle

    async def terminate(self, handle: HelperHandle) -> None:
        """SIGTERM, then SIGKILL (through its pidfd); call from a shielded scope."""
        import anyio

        proc = handle.process
        with anyio.move_on_after(self.kill_timeout):
            if not proc.exited():
                proc.send_signal(signal.SIGTERM)
                with anyio.move_on_after(self.kill_timeout / 2):
                    await proc.wait()
            if not proc.exited():
                proc.send_signal(signal.SIGKILL)
                await proc.wait()

    async def run(
        self,
        job: JobSpec,
        *,
        on_output: OutputCallback,
        on_finished: FinishedCallback | None = None,
    ) -> JobResult:
        self.check_job(job)
        spec = self.spec(job)
        self.debug_commands(spec)
        if self.server is not None:
            return await self._run(self.server, job, spec, on_output, on_finished)
        async with SandboxServer(python=self.python) as server:
            return await self._run(server, job, spec, on_output, on_finished)

    async def _run(
        self,
        server: SandboxServer,
        job: JobSpec,
        spec: Spec,
        on_output: OutputCallback,
        on_finished: FinishedCallback | None,
    ) -> JobResult:
        """Drive the job's :class:`Conversation`: its bytes, its pipes, its callbacks."""
        import anyio

        conversation = Conversation(job.argv)
        failure: Exception | None = None
        handle = await self.start_helper(server, conversation, spec, job.tty)
        pipes = handle.pipes
        locks = {fd: anyio.Lock() for fd in pipes.fds} if pipes is not None else {}
        try:
            async with anyio.create_task_group() as tg:
                if pipes is not None:
                    for fd in pipes.fds:
                        tg.start_soon(_pump, pipes, fd, locks[fd], on_output)
                try:
                    while not conversation.over:
                        for event in conversation.receive(await handle.control.receive()):
                            if isinstance(event, JobExited):
                                handle.process.release()  # the job has exited: its place is free
                                if pipes is not None:
                                    await _drain(pipes, locks, on_output)
                                if on_finished is not None:
                                    await _finish(handle, spec, event.result, on_finished)
                                await handle.control.send(conversation.done())
                    handle.process.release()  # an error: the job is over (or never ran)
                    with anyio.move_on_after(self.kill_timeout):
                        await handle.process.wait()
                    if not handle.process.exited():
                        raise ExecutorError("the sandbox helper did not exit after the job")
                except Exception as e:  # raised below, outside the task group (no ExceptionGroup)
                    failure = e
                    with anyio.CancelScope(shield=True):
                        await self.terminate(handle)
                except BaseException:  # cancellation: kill, then let it propagate
                    with anyio.CancelScope(shield=True):
                        await self.terminate(handle)
                    raise
        finally:
            handle.close()
        if failure is not None:
            raise failure
        return conversation.outcome()
