"""The helper process that assembles a container and runs one job in it.

Forked, one per job, by the sandbox server (``repeatr.executors.forkserver``),
a *fresh*, isolated, single-threaded interpreter started once per invocation
(``python -I -S -c "import sys; sys.path.append(PKG); ...main(sys.argv)"
--server FD PARENT_PID``: nothing from the caller's cwd or PYTHON*
environment is ever imported; ``--debug`` prints the exact command to replay
by hand): never forked from the threaded parent, so ``unshare`` applies to a
single-threaded process.
Import-light: stdlib, ``repeatr.errors``, ``repeatr.linux``, ``repeatr.assemble``.

Protocol: the typed messages of ``repeatr.executors.protocol``, in frames
(``repeatr.executors.wire``) on the unix socket ``FD``. The parent sends the
``Spec``; the helper answers ``Assembled``, ``Started`` (job pid), then
``Exit`` (code, or 128+N for signal N), or ``Error`` (category, message) at
any point; after ``Exit`` it waits for ``Done`` so the parent can pack
outputs through the helper's root (held by a descriptor of
``/proc/<helper pid>/root``: ``repeatr.linux.procroot``) while the mounts
still exist.

Replay by hand: ``... -c "..." --spec FILE`` (``--debug`` prints the spec as
JSON and this command) reads the spec from FILE and runs the job with stdio
on the terminal, with no parent: the reports go to stderr, one line each,
and the helper exits with the job's exit code.

State: one :class:`Sandbox` per helper process holds the job's pid, the
cleanups, the disk watch and the job's disk; the SIGTERM handler is its
method, and ``oci_sandbox`` is handed the object.

Lifetime: the helper dies with repeatr, and its private mount namespace,
with every mount in it, dies with it: nothing is ever mounted in the host's
namespace. It watches a pidfd of the repeatr *process* (the server opened it
first thing, then checked getppid to close the race) and the control socket;
either one firing means repeatr is gone: it SIGKILLs the job and every
descendant (it is their subreaper) and exits. SIGTERM (cancellation, or its
server's death: PR_SET_PDEATHSIG toward the single-threaded server) does the
same. Not PR_SET_PDEATHSIG toward repeatr: that follows the parent *thread*,
and trio spawns processes from worker threads that exit after 10 s idle,
which would kill a healthy run. The job has PR_SET_PDEATHSIG(SIGKILL) toward the helper
(single-threaded, so there it is exact).

Modes: ``ns`` unshares mount, pid, uts, ipc (and net unless the network is
``host``); ``chroot`` unshares mount, pid and ipc (it keeps the host's network
and hostname). In both the job is PID 1 of the new pid namespace: it mounts
its /proc (masked and partly read-only, ``repeatr.assemble.ops.Proc``) in a
nested mount namespace, pivots into the root there and detaches the old one;
when it exits, the kernel kills everything left in its pid namespace. The
job inherits only its stdin, stdout and stderr, and gets a session keyring
of its own. ``oci`` unshares
only the mount namespace, assembles the root there, and hands it to an OCI
runtime (runc, crun, runsc) that runs as the helper's child
(``repeatr.executors.oci_sandbox``): the runtime sees the assembled root.
``vm`` does the same and shares the root into a virtual machine
(``repeatr.executors.vm_sandbox``: virtiofsd and qemu are its children).

Limits (``Spec.limits``): in ``ns`` and ``chroot`` modes the helper makes
the run's cgroup (``repeatr.linux.cgroups``) and the job joins it before
anything else; in ``oci`` mode the runtime does that from ``config.json``.
The timeout is the helper's: when it passes, the job and everything it
started are SIGKILLed and the exit report says ``timed_out``. A kernel OOM
kill in the run's memory group is reported as ``oom``. Disk
(``repeatr.linux.scratch``): with ``limits.disk`` the helper mounts an ext4
of that size on ``Spec.rw`` (every overlay's upper and work dirs) before
assembling, in its own mount namespace, so it dies with the helper; the exit
report says ``"disk": "limit"`` when the job used it up. Without it, the
helper watches the work dir's filesystem and kills a job that eats into its
last reserve (``"disk": "reserve"``).

Seccomp (``Spec.seccomp``, ``ns`` and ``chroot``): a BPF program the
parent compiled (``repeatr.executors.seccomp``); the job installs it last,
after no_new_privs, right before ``execve``. In ``oci`` mode the runtime does.

The helper never writes to its stdout/stderr: they belong to the job.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from repeatr.assemble import release
from repeatr.assemble.ops import Bind, Mkdir, Op, Overlay, Root, execute_all, op_from_json
from repeatr.assemble.plan import plan
from repeatr.errors import AssemblyError, Category, ExecutorError, RepeatrError
from repeatr.executors.jobstart import JobStart
from repeatr.executors.protocol import Assembled, Done, Error, Exit, NetworkPolicy, Spec, Started
from repeatr.executors.wire import read_frame, write_frames
from repeatr.linux import capability, cgroups, libc, rlimits, scratch, sysctl
from repeatr.linux._jobstart import FAILURE_SIZE

# Start-up time is most of a short job's cost: only cheap modules are imported
# (no json, socket, typing, dataclasses, contextlib; traceback only on failure).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

    from repeatr.executors.protocol import Message


# --- messages ---------------------------------------------------------------
def error_msg(exc: BaseException) -> Error:
    if isinstance(exc, RepeatrError):
        return Error(category=exc.category.name, message=exc.message, hint=exc.hint)
    import traceback

    return Error(
        category=Category.EXECUTOR.name, message=f"helper failed: {exc!r}",
        traceback="".join(traceback.format_exception(exc)),
    )


class Control:
    """The helper's line to its parent: the control socket and a pidfd of the parent.

    Replayed by hand (``--spec FILE``) there is neither: reports go to
    stderr, one line each, and nothing but the job ends the run.
    """

    def __init__(self, sock: int | None, parent: int | None) -> None:
        self.sock = sock
        self.parent = parent
        #: Reports held back (``hold``), sent with the next one.
        self._held: list[Message] = []

    def hold(self, msg: Message) -> None:
        """Report ``msg`` with the next report, in one write: ``Assembled`` goes with
        ``Started`` (or the error), and the parent wakes once for both, not twice."""
        if self.sock is None:
            self.report(msg)
        else:
            self._held.append(msg)

    def report(self, msg: Message) -> None:
        if self.sock is not None:
            held, self._held = self._held, []
            write_frames(self.sock, [*held, msg])
            return
        fields = " ".join(f"{k}={v!r}" for k, v in msg.to_wire().items() if k != "$")
        os.write(2, f"repeatr-sandbox: {msg.tag} {fields}\n".encode())

    def watch(self, poller: select.poll) -> None:
        for fd in (self.sock, self.parent):
            if fd is not None:
                poller.register(fd, select.POLLIN)

    def parent_gone(self, ready: set[int]) -> bool:
        """Whether the parent died (or closed the socket), given the fds poll found ready."""
        if self.parent is not None and self.parent in ready:
            return True
        return self.sock is not None and self.sock in ready and read_frame(self.sock) is None

    def wait_done(self) -> None:
        """Until the parent says Done (or goes away)."""
        if self.sock is None:
            return
        while (msg := read_frame(self.sock)) is not None:
            if isinstance(msg, Done):
                break


# --- killing ---------------------------------------------------------------
def _children() -> list[int]:
    kids: list[int] = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def kill_descendants() -> None:
    """SIGKILL and reap every child until none is left (we are the subreaper)."""
    while True:
        kids = _children()
        if not kids:
            break
        for pid in kids:
            try:  # noqa: SIM105 (contextlib: start-up time)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in kids:
            try:  # noqa: SIM105
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and every other child; reap none of them."""
    for target in (pid, -pid, *(c for c in _children() if c != pid)):
        try:  # noqa: SIM105
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Sandbox:
    """The helper's state: the job's pid, the cleanups, the disk watch and disk.

    One per helper process; ``on_term`` (SIGTERM) and the parent's death
    reach the job and the cleanups through it.
    """

    def __init__(self, control: Control) -> None:
        self.control = control
        #: What SIGTERM and the parent's death kill (0: nothing runs).
        self.job_pid = 0
        #: Teardown that must run however the helper ends (SIGTERM, parent
        #: death, normal exit): removing cgroups, ``runc delete``. Each is idempotent.
        self.cleanups: list[Callable[[], None]] = []
        #: The job's limited disk (limits.disk), once mounted; else the watch on the host's.
        self.scratch: str | None = None
        self.watch: scratch.DiskWatch | None = None
        self.disk_stopped = False
        #: The job's exit, once reported (a replay exits with its code).
        self.last_exit: Exit | None = None

    # --- ending ------------------------------------------------------------------
    def kill_job(self) -> None:
        if self.job_pid:
            for target in (self.job_pid, -self.job_pid):  # the job, and its process group
                try:  # noqa: SIM105
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        kill_descendants()

    def reap(self) -> None:
        """SIGKILL and reap every descendant (``kill_descendants``; for ``oci_sandbox``)."""
        kill_descendants()

    def run_cleanups(self) -> None:
        """Each cleanup runs to its end: a SIGTERM meanwhile waits until they are done."""
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            while self.cleanups:
                try:  # noqa: SIM105
                    self.cleanups.pop()()
                except Exception:  # best effort: the next run's gc catches leftovers
                    pass
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def tear_down(self) -> None:
        """Kill the job's tree and run the cleanups, once: SIGTERM is blocked from here on.

        The parent's death reaches a helper twice (its own pidfd watch, and
        the server's SIGTERM): a SIGTERM handler entered in the middle of a
        cleanup would find the list already popped and exit, leaving that
        cleanup (a cgroup's removal, ``runc delete``) half done.
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        self.kill_job()
        self.run_cleanups()

    def on_term(self, signum: int, frame: object) -> None:
        self.tear_down()
        os._exit(128 + signum)

    def wait_job(self, pid: int, timeout: float | None) -> tuple[int, bool]:
        """Wait for our child ``pid``: (wait status, timed out). Exits if the parent goes."""
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        self.control.watch(poller)
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        watch = self.watch
        while True:
            wake = deadline if watch is None else min(deadline or watch.next, watch.next)
            wait_ms = None if wake is None else max(0, int((wake - time.monotonic()) * 1000))
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            if pidfd in ready:
                break
            if self.control.parent_gone(ready):
                self.tear_down()
                os._exit(1)
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                deadline = None
                kill_tree(pid)
            if watch is not None and time.monotonic() >= watch.next and watch.tripped():
                self.disk_stopped = True
                watch = None
                kill_tree(pid)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        return status, timed_out

    def exit_report(self, status: int, timed_out: bool, oom: bool) -> Exit:
        code = os.waitstatus_to_exitcode(status)
        sig = -code if code < 0 else None
        return Exit(code=128 + sig if sig else code, signal=sig, timed_out=timed_out, oom=oom,
                    disk=self.disk_state())

    def disk_state(self) -> str:
        """The exit report's ``disk``: "reserve", "limit" (used up) or ""."""
        if self.disk_stopped:
            return "reserve"
        if self.scratch is not None and scratch.is_full(self.scratch):
            return "limit"
        return ""

    # --- assembling --------------------------------------------------------------
    def make_group(self, spec: Spec) -> cgroups.Group | None:
        wanted = spec.limits.cgroup()
        if not wanted:
            return None
        try:
            group = cgroups.Group.create(spec.cgroup, wanted)
        except OSError as e:
            raise ExecutorError(
                f"cannot create the run's cgroup for {', '.join(sorted(wanted))}: {e}",
                hint="repeatr doctor shows the cgroup layout; limits need v1 controllers",
            ) from e
        self.cleanups.append(group.remove)
        return group

    def assemble(self, spec: Spec) -> tuple[Root, list[Op]]:
        flags = libc.CLONE_NEWNS
        if spec.mode == "chroot":
            flags |= libc.CLONE_NEWPID | libc.CLONE_NEWIPC  # the host's network and hostname
        if spec.mode == "ns":
            flags |= libc.CLONE_NEWPID | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
            if spec.network.netns is not None:
                # A namespace repeatr.net prepared (bridge): join it instead of a new one.
                fd = os.open(spec.network.netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc.setns(fd, libc.CLONE_NEWNET)
                finally:
                    os.close(fd)
            elif spec.network.policy is not NetworkPolicy.HOST:
                flags |= libc.CLONE_NEWNET
        p = plan(
            [op_from_json(o) for o in spec.mounts],
            [m for m in (op_from_json(o) for o in spec.cradle) if isinstance(m, Mkdir)],
        )
        image = self.prepare_disk(spec, p.mounts)  # mkfs: before the new pid namespace
        libc.unshare(flags)
        if flags & libc.CLONE_NEWNET:
            sysctl.configure_netns()  # this process is in its new namespace now
            libc.link_up("lo")
        libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
        if image is not None:
            self.mount_disk(spec.rw, image)
        root = Root(spec.root)
        os.makedirs(root.path, exist_ok=True)
        execute_all(p.mounts, root)
        # Nothing is packed without outputs: nothing to release. A bind of a
        # host path keeps it on (belt and braces: assembly already refuses
        # any mount under one, so no mount point of ours can be in a host dir).
        root.releasing = bool(spec.outputs) or any(isinstance(op, Bind) for op in p.mounts)
        if root.releasing:
            root.layers = release.layer_ids(root, p.mounts)
        # Mount points of what is mounted later (the job's /proc, a runtime's
        # mounts): made now, so they are recorded and removed before packing.
        release.prepare(root, [*(op.target for op in p.late), *spec.mountpoints])
        execute_all(p.cradle, root)
        if spec.mode == "ns" and spec.hostname:
            libc.sethostname(spec.hostname)
        return root, list(p.late)

    def prepare_disk(self, spec: Spec, mounts: Sequence[Op]) -> str | None:
        """limits.disk: the image of the ext4 to mount under every writable layer.

        Without it: None, and the watch on the host's disk is set up instead.
        """
        size = spec.limits.disk
        rw = spec.rw
        if not size:
            workdir = os.path.dirname(spec.root)
            try:  # noqa: SIM105
                self.watch = scratch.DiskWatch(workdir)
            except OSError:  # no statvfs: no watch (the job still runs)
                pass
            return None
        if not rw:
            raise ExecutorError("limits.disk: the spec names no writable-layer dir (rw)")
        inside = rw.rstrip("/") + "/"
        for op in mounts:
            if isinstance(op, Overlay) and op.upper is not None and not (
                op.upper.startswith(inside) and (op.work or "").startswith(inside)
            ):
                raise ExecutorError(f"limits.disk: {op.describe()} writes outside {rw}")
        image = rw.rstrip("/") + ".img"
        try:
            scratch.make_image(image, size)
        except OSError as e:
            raise _disk_error(size, rw, e) from e
        return image

    def mount_disk(self, rw: str, image: str) -> None:
        """Mount the job's disk on ``rw``, in the helper's (new, private) mount namespace."""
        try:
            scratch.mount_image(image, rw)
        except OSError as e:
            raise _disk_error(os.stat(image).st_size, rw, e) from e
        self.scratch = rw

    # --- the run -------------------------------------------------------------------
    def run(self, spec: Spec) -> bool:
        """Assemble, start the job, report; False if the job could not start."""
        try:
            root, late = self.assemble(spec)
        except OSError as e:
            raise AssemblyError(f"assembling the container failed: {e}") from e
        last_cap = capability.running_last_cap()
        if spec.mode == "oci":
            from repeatr.executors import oci_sandbox

            self.control.report(Assembled(pid=os.getpid()))
            return oci_sandbox.run(self, spec, root)
        if spec.mode == "vm":
            from repeatr.executors import vm_sandbox

            self.control.report(Assembled(pid=os.getpid()))
            return vm_sandbox.run(self, spec, root)
        group = self.make_group(spec)
        # The job's rlimits are the documented ones, not its invoker's
        # (repeatr.linux.rlimits): set here, the C child inherits them.
        rlimits.apply_job_rlimits()
        self.control.hold(Assembled(pid=os.getpid()))  # sent with Started, or the error
        pid = self.start_job(spec, root, late, group, last_cap)
        if pid is None:
            return False
        self.control.report(Started(pid=pid))
        status, timed_out = self.wait_job(pid, spec.limits.timeout)
        self.job_pid = 0
        kill_descendants()  # the kernel killed the job's pid namespace; reap what is left
        oom = group is not None and group.oom_kills() > 0
        self.run_cleanups()
        release.release(root, root.layers, spec.outputs)  # outputs are packed next
        self.finish(self.exit_report(status, timed_out, oom))
        return True

    def start_job(
        self, spec: Spec, root: Root, late: list[Op], group: cgroups.Group | None, last_cap: int
    ) -> int | None:
        """Start the job (``repeatr.executors.jobstart``); its pid, or None once its
        failure to start is reported."""
        start = JobStart(spec, root, late, group, last_cap)
        try:
            errr, errw = os.pipe2(os.O_CLOEXEC)
            start.fds.append(errr)
            try:
                stdin = None
                if not spec.interactive:
                    stdin = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                    start.fds.append(stdin)
                close = [errr] if self.control.sock is None else [errr, self.control.sock]
                # CLONE_VFORK: back once the job has exec'd or failed.
                pid = start.start(stdin, errw, close)
            finally:
                os.close(errw)
            self.job_pid = pid
            record = read_exactly(errr, FAILURE_SIZE)
        finally:
            start.close()  # errr among them
        if not record:  # end of stream: the exec succeeded
            return pid
        os.waitpid(pid, 0)
        self.job_pid = 0
        self.control.report(error_msg(start.failure_error(record)))
        return None

    def finish(self, report: Exit) -> None:
        self.last_exit = report
        self.control.report(report)


def _disk_error(size: int, rw: str, e: OSError) -> ExecutorError:
    return ExecutorError(
        f"cannot make the job's disk of {size} bytes (limits.disk) on {rw}: {e}",
        hint="it needs loop devices (/dev/loop-control) and mkfs.ext4 (e2fsprogs);"
        " `repeatr doctor` shows whether this host has them",
    )


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or b"" at end of stream before any."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data if len(data) == size else b""


# --- the helper ----------------------------------------------------------------
#: Ignored signals that are the helper's own doing, not its invoker's: the
#: interpreter's (SIGPIPE, SIGXFSZ) and the server's (SIGINT: Ctrl-C is the
#: parent's). Every child that execs sets them back to default.
OWN_IGNORED = frozenset({signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT})


def default_signals() -> None:
    """Every signal this process's invoker ignored back to default, none blocked.

    SIG_IGN and the signal mask survive fork and execve: one ignored or
    blocked by whoever started ``repeatr run`` (a shell's ``trap '' QUIT``,
    ``nohup``, a CI runner's mask) would reach the server, each helper, an
    OCI runtime and through it the job (runc passes the mask on). Called
    first thing by the server and by a replay (``main``).
    """
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP) or sig in OWN_IGNORED:
            continue
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def read_spec_file(path: str) -> Spec:
    """The spec ``--debug`` printed, saved in ``path`` (replay by hand).

    Its cgroup name (an OCI container's ID and ``cgroupsPath`` too) becomes
    one of this process: the saved one names the run's repeatr, gone by
    now, and any repeatr's gc reclaims a dead owner's groups, even in the
    middle of the replay (``repeatr.linux.cgroups.gc``).
    """
    from repeatr.executors.protocol import spec_from_json

    with open(path) as f:
        text = f.read()
    spec = spec_from_json(text)
    if spec.cgroup:
        spec = spec_from_json(text.replace(spec.cgroup, cgroups.new_name(os.getpid())))
    return spec


def main(argv: list[str]) -> int:
    """``--spec FILE``: the job of a saved spec, replayed by hand (no parent).

    Started by repeatr, the helper is a child of the sandbox server
    (``repeatr.executors.forkserver``), which calls :func:`serve_parent`.
    """
    if len(argv) != 3 or argv[1] != "--spec":
        os.write(2, b"usage: ... --spec FILE (a sandbox spec saved from --debug)\n")
        return 2
    default_signals()
    box = Sandbox(Control(None, None))
    signal.signal(signal.SIGTERM, box.on_term)
    try:
        spec = read_spec_file(argv[2])
    except (OSError, ValueError) as e:
        os.write(2, f"repeatr-sandbox: cannot read the spec {argv[2]}: {e}\n".encode())
        return 2
    libc.set_child_subreaper()
    return _serve(box, spec, replay=True)


def serve_parent(box: Sandbox) -> int:
    """Read the ``Spec`` from the parent on ``box.control.sock``, run it, report; the exit code.

    The caller has set up what the helper's life depends on: the SIGTERM
    handler, the pidfd of the parent, the subreaper flag.
    """
    sock = box.control.sock
    assert sock is not None
    msg = read_frame(sock)
    if msg is None:
        return 1  # the parent went away before sending the job
    if not isinstance(msg, Spec):
        box.control.report(error_msg(ExecutorError(f"sandbox protocol: {msg.tag}, not a spec")))
        return 1
    return _serve(box, msg, replay=False)


def _serve(box: Sandbox, spec: Spec, *, replay: bool) -> int:
    try:
        if not box.run(spec):
            return 1 if not replay else 127
    except BaseException as e:  # reported, never printed: stderr is the job's
        box.tear_down()
        try:  # noqa: SIM105
            box.control.report(error_msg(e))
        except OSError:  # the parent is gone
            pass
        return 1
    box.control.wait_done()
    if replay:
        return box.last_exit.code if box.last_exit is not None else 1
    return 0


def leave(code: int) -> NoReturn:
    """Exit without interpreter finalization (~2 ms the parent waits for).

    Nothing needs it: no threads, no atexit hooks, cleanups already ran, and
    the helper never writes to stdout/stderr (flushed anyway, in case).
    """
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib: start-up time)
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    leave(main(sys.argv))
