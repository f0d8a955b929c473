"""The sandbox helper's ``vm`` mode: boot a VM on the assembled root and run the job in it.

Runs inside the helper (``repeatr.executors.sandbox``) after the root is
assembled in its private mount namespace (minus ``/proc`` and ``/dev``: the
guest mounts its own there); import-light like it. The parent
(``repeatr.executors.vm``) sends the command lines in ``Spec.vm``.

1. The job's cwd and exec are checked inside the root (RESOLVE_IN_ROOT),
   as for the OCI runtimes: a missing one is our JobInvalid, not a guest
   failure; the exec's path is appended to the initramfs (``job/exec``).
2. virtiofsd shares the root (it runs in this mount namespace, so it sees
   every mount of the plan); qemu starts once its socket exists, with the
   status port's pipe and the job's stdout and stderr as fds 3, 4 and 5.
3. The guest's ``/init`` writes ``booted`` on the status port once the job
   is about to start, then its runner ``exit CODE SIGNAL OOM`` when the job
   has ended (OOM: the guest cgroup's count of OOM kills), and powers off.
   A guest that does not say ``booted`` within the boot deadline is killed
   and the run fails (some TCG boots hang: the deadline, never a hang);
   the job's timeout (``limits.timeout``) runs from ``booted`` and kills
   qemu when it passes (exit 137, ``timed_out``), as does the watch on the
   host disk's reserve (``"disk": "reserve"``); a used-up ``limits.disk``
   is reported as on every mode (``"disk": "limit"``).
4. qemu's exit status means nothing (a powered-off guest exits 0): only the
   status port says how the job ended. qemu ending without an exit report
   is an ExecutorError quoting the end of the guest's console.

qemu is the helper's ``job_pid``: SIGTERM (cancellation) and the parent's
death kill it and virtiofsd (the helper is their subreaper) through the
same ``Sandbox.tear_down`` as every mode; virtiofsd also exits by itself
when qemu's end of its socket closes. Both get PR_SET_PDEATHSIG(SIGKILL)
toward the helper, so even a SIGKILLed helper leaves neither behind.
"""

from __future__ import annotations

import os
import select
import signal
import time

from repeatr.assemble import release
from repeatr.errors import ExecutorError
from repeatr.executors.lookup import check_cwd, find_exec
from repeatr.executors.protocol import Exit, Started
from repeatr.linux import libc
from repeatr.linux.oomscore import default_oom_score

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.assemble.ops import Root
    from repeatr.executors.protocol import Spec, VmCommands
    from repeatr.executors.sandbox import Sandbox

SOCKET_TIMEOUT = 10.0  # seconds for virtiofsd to listen
POWEROFF_TIMEOUT = 10.0  # seconds from the exit report to qemu's exit
CONSOLE_TAIL = 8  # lines of the guest's console quoted in an error


def exec_path(spec: Spec, root: Root) -> str:
    """The job's exec as a path in the root; JobInvalid when cwd or exec is not there."""
    rootfd = os.open(root.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        check_cwd(rootfd, spec.cwd)
        path = next((v for k, v in spec.env if k == "PATH"), None)
        return find_exec(rootfd, spec.argv[0], path, spec.cwd)
    finally:
        os.close(rootfd)


def append_job_files(initrd: str, files: dict[str, bytes]) -> None:
    """Append ``job/NAME`` files to the initramfs (a newc archive after the others)."""
    from repeatr.vm import cpio

    with open(initrd, "ab") as f:
        f.write(cpio.archive([cpio.file(f"job/{k}", v) for k, v in files.items()]))


def _ip(*args: str, stdin: bytes | None = None) -> str:
    import subprocess

    done = subprocess.run(["ip", *args], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise ExecutorError(
            f"bridging the VM's tap: `ip {' '.join(args)}` failed: "
            f"{done.stderr.decode(errors='replace').strip()}",
            hint="it needs iproute2 and /dev/net/tun (the tun driver)",
        )
    return done.stdout.decode()


def bridge_tap(netns: str, tap: str) -> bytes:
    """Join the run's network namespace and hand its ``eth0`` to the guest; ``job/net``.

    repeatr.net prepared the namespace as for every executor: ``eth0``, one end
    of a veth whose other end is on repeatr's bridge, with the run's leased
    address and a default route. Here, inside that namespace only, a tap for
    qemu and ``eth0`` are enslaved to a bridge of their own, and the address
    and route move to the guest's NIC (its ``eth0``): the guest is on
    repeatr's bridge with the run's address. Tap and bridge live in the run's
    namespace, so they go with it, like the veth, when the run's network is
    torn down (or collected by gc after a crash): nothing else to clean up.
    """
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(fd, libc.CLONE_NEWNET)
    finally:
        os.close(fd)
    address = gateway = ""
    for line in _ip("-o", "-4", "addr", "show", "dev", "eth0").splitlines():
        words = line.split()
        if "inet" in words:
            address = words[words.index("inet") + 1]
    for line in _ip("-4", "route", "show", "default").splitlines():
        words = line.split()
        if "via" in words:
            gateway = words[words.index("via") + 1]
    if not address or not gateway:
        raise ExecutorError("the run's network namespace has no address or default route on eth0")
    br = tap + "br"
    _ip("-batch", "-", stdin=(
        f"addr flush dev eth0\n"
        f"link add {br} type bridge\n"
        f"tuntap add dev {tap} mode tap\n"
        f"link set eth0 master {br}\n"
        f"link set {tap} master {br}\n"
        f"link set {tap} up\n"
        f"link set {br} up\n"
    ).encode())
    return f"{address} {gateway}\n".encode()


def spawn(argv: list[str], fds: dict[int, int], log: int, cwd: str) -> int:
    """fork+exec ``argv``: stdin /dev/null, stdout and stderr ``log``, ``fds`` as given."""
    pid = os.fork()
    if pid == 0:
        try:
            libc.set_pdeathsig(signal.SIGKILL)
            # Copies above every target first: a source may be a target too (1, 2).
            moved = {target: os.dup(fd) for target, fd in fds.items()}
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.chdir(cwd)
            for target, fd in moved.items():
                os.dup2(fd, target)  # dup2 clears FD_CLOEXEC on the target
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            default_oom_score()  # qemu's (the guest's memory), not the invoker's
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def console_tail(vm: VmCommands) -> str:
    """The last lines of the guest's console and of qemu's log, for an error message."""
    lines: list[str] = []
    for path in (vm.console, vm.log):
        try:
            with open(path, errors="replace") as f:
                lines += [line.rstrip() for line in f if line.strip()][-CONSOLE_TAIL:]
        except OSError:
            pass
    return " | ".join(lines) if lines else "(no console output)"


#: Where virtiofsd (qemu 7.2's) writes a pid file named after its socket's
#: path, and never removes it: a tmpfs of the helper's own goes there.
VIRTIOFSD_RUN = "/run/virtiofsd"


def private_virtiofsd_run() -> None:
    """A tmpfs on ``VIRTIOFSD_RUN`` in the helper's private mount namespace.

    virtiofsd locks ``/run/virtiofsd/<socket path>.pid``: two runs whose
    sockets have the same path (relative: ``fs.sock`` in each VM dir) would
    collide ("Cannot lock pid file"), and the files would pile up on the
    host. Here each run has its own, gone with the helper's namespace.
    """
    os.makedirs(VIRTIOFSD_RUN, mode=0o700, exist_ok=True)
    libc.mount("tmpfs", VIRTIOFSD_RUN, "tmpfs",
               libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "mode=0700,size=64k")


def wait_socket(vm: VmCommands, pid: int) -> None:
    path = os.path.join(vm.dir, vm.socket)
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not os.path.exists(path):
        if os.waitpid(pid, os.WNOHANG)[0] != 0:
            raise ExecutorError(f"virtiofsd exited before it listened: {console_tail(vm)}",
                                hint=f"replay it by hand: {' '.join(vm.virtiofsd)}")
        if time.monotonic() > deadline:
            raise ExecutorError(f"virtiofsd did not listen on {path} within {SOCKET_TIMEOUT:g}s")
        time.sleep(0.002)


class StatusPort:
    """The guest's status port, read line by line from the pipe qemu writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.closed = False

    def feed(self) -> list[str]:
        """What is readable now, as complete lines."""
        chunk = os.read(self.fd, 4096)
        if not chunk:
            self.closed = True
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [line.decode(errors="replace") for line in lines]


def run(box: Sandbox, spec: Spec, root: Root) -> bool:
    """Boot the VM over the assembled ``root``, wait for the job's end, report."""
    vm = spec.vm
    if vm is None:
        raise ExecutorError("sandbox protocol: a vm spec without its commands")
    files = {"exec": os.fsencode(exec_path(spec, root))}
    if vm.tap is not None:
        if spec.network.netns is None:
            raise ExecutorError("a bridge network needs the namespace repeatr.net prepared")
        files["net"] = bridge_tap(spec.network.netns, vm.tap)
    try:
        append_job_files(vm.initrd, files)
    except OSError as e:
        raise ExecutorError(f"cannot write the job's initramfs {vm.initrd}: {e}") from e
    private_virtiofsd_run()
    log = os.open(vm.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    fsd = spawn(vm.virtiofsd, {}, log, vm.dir)
    wait_socket(vm, fsd)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    qemu = spawn(vm.qemu, {3: status_w, 4: 1, 5: 2}, log, vm.dir)
    os.close(status_w)
    os.close(log)
    box.job_pid = qemu
    box.control.report(Started(pid=qemu))
    report = wait_guest(box, spec, vm, qemu, StatusPort(status_r))
    os.close(status_r)
    box.job_pid = 0
    box.reap()  # virtiofsd, if it has not exited with qemu's socket
    release.release(root, root.layers, spec.outputs)
    box.finish(report)
    return True


def wait_guest(box: Sandbox, spec: Spec, vm: VmCommands, qemu: int, port: StatusPort) -> Exit:
    """Read the status port until the job's exit; enforce the boot deadline and the timeout."""
    pidfd = os.pidfd_open(qemu)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(port.fd, select.POLLIN)
    box.control.watch(poller)
    deadline: float | None = time.monotonic() + vm.boot_timeout
    booted = False
    killed = False  # at the timeout, or at the host disk's reserve (box.disk_stopped)
    exit_line: list[str] = []
    watch = box.watch  # the host disk's reserve (no limits.disk), as for every mode
    try:
        while not exit_line:
            wake = deadline if watch is None else min(deadline or watch.next, watch.next)
            wait_ms = None if wake is None else max(0, int((wake - time.monotonic()) * 1000))
            ready = {fd for fd, _ in poller.poll(wait_ms)}
            if box.control.parent_gone(ready):
                box.tear_down()
                os._exit(1)
            if port.fd in ready and not port.closed:
                for line in port.feed():
                    word, _, rest = line.partition(" ")
                    if word == "booted" and not booted:
                        booted = True
                        timeout = spec.limits.timeout
                        deadline = None if timeout is None else time.monotonic() + timeout
                    elif word == "exit":
                        exit_line = rest.split()
                    elif word == "fail":
                        raise ExecutorError(f"the VM's init failed: {rest}",
                                            hint=f"guest console: {console_tail(vm)}")
                if port.closed:
                    poller.unregister(port.fd)
            if exit_line:
                break
            if pidfd in ready:
                raise ExecutorError(
                    "the VM ended without reporting the job's exit"
                    + ("" if booted else " (it did not boot)"),
                    hint=f"guest console: {console_tail(vm)}",
                )
            if watch is not None and time.monotonic() >= watch.next and watch.tripped():
                box.disk_stopped = True
                killed = True
                break
            if deadline is not None and time.monotonic() >= deadline:
                if not booted:
                    raise ExecutorError(
                        f"the VM did not boot within {vm.boot_timeout:g}s: killed",
                        hint=f"a hung boot (rare under TCG) or an overloaded host; "
                        f"guest console: {console_tail(vm)}",
                    )
                killed = True
                break
        if killed:
            os.kill(qemu, signal.SIGKILL)
            os.waitpid(qemu, 0)
            kill = int(signal.SIGKILL)  # a plain int: the protocol marshals no enums
            return Exit(code=128 + kill, signal=kill, timed_out=not box.disk_stopped,
                        disk=box.disk_state())
        if not select.select([pidfd], [], [], POWEROFF_TIMEOUT)[0]:
            os.kill(qemu, signal.SIGKILL)  # the job is over: its VM goes, powered off or not
        os.waitpid(qemu, 0)
    finally:
        os.close(pidfd)
    try:
        code, sig, oom = (int(word) for word in exit_line)
    except ValueError:
        raise ExecutorError(f"the VM reported a malformed exit: {' '.join(exit_line)!r}") from None
    return Exit(code=code, signal=sig or None, oom=oom > 0, disk=box.disk_state())

