"""The sandbox helper's ``oci`` mode: drive an OCI runtime over the assembled root.

Runs inside the helper (``repeatr.executors.sandbox``), after the root is
assembled in the helper's private mount namespace; import-light like it.
The parent (``repeatr.executors.oci``) sends the bundle's ``config.json``
and the runtime command lines in ``Spec.oci``; the helper writes the bundle
(``write_bundle``), so a spec replayed by hand (``--spec FILE``) needs
nothing of the run it came from.

Before the runtime starts, the job's cwd and exec are checked inside the root
(resolved with RESOLVE_IN_ROOT): runc and crun would create a missing cwd,
and their "exec failed" is a runtime error, not our JobInvalid.

Two styles (host-notes.md):

``create`` (runc, crun): ``create --pid-file`` with the helper's stdout and
stderr (the job's pipes; nobody waits on them until the helper exits, so the
paused container holding them is harmless), then ``start``. The helper is a
subreaper, so when ``create`` exits the container's init becomes its child:
it ``waitpid``s it for the exact status (a signal is a signal, not a guessed
128+N) and reads the run's OOM count from the cgroup before ``delete -f``
removes it. Between ``create`` and ``start`` the container's root mount is
made nodev,nosuid again (``restore_root_flags``: crun clears both).

``run`` (runsc): ``run`` in the foreground; its exit code is the job's
(128+N for signal N). The gofer and the sandbox are our descendants and are
reaped with it; ``delete -f`` runs only if the run was cut short.

Teardown (``delete -f``, the state dir, leftover cgroup dirs) is registered
in the helper's ``Sandbox.cleanups`` before the runtime starts, so SIGTERM (cancellation)
and the parent's death run it too.
"""

from __future__ import annotations

import os
import select
import signal

from repeatr.assemble import release
from repeatr.errors import ExecutorError, JobInvalid
from repeatr.executors.lookup import check_cwd, find_exec
from repeatr.executors.protocol import Started
from repeatr.linux import cgroups, libc
from repeatr.linux.oomscore import default_oom_score
from repeatr.linux.rmtree import remove_tree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from repeatr.assemble.ops import Root
    from repeatr.executors.protocol import OciCommands, Spec
    from repeatr.executors.sandbox import Sandbox

CGROUP2_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"
TEARDOWN_TIMEOUT = 10.0  # seconds for `delete -f`
RUNTIME_FAILED = 128  # runsc's exit code for its own failures

# --- checks inside the root ----------------------------------------------------

#: fs/exec.c ``bprm_stack_limits``: argv and envp may take a quarter of the
#: stack rlimit, at most 3/4 of _STK_LIM (8 MiB), at least ARG_MAX (32 pages).
_STK_LIM = 8 << 20
_ARG_MAX = 32 * 4096
_MAX_ARG_STRLEN = 32 * 4096


def exec_too_big(argv: list[str], env: list[str]) -> bool:
    """Would execve(2) refuse ``argv`` and ``env`` with E2BIG under the job's stack rlimit?

    The runtime sets the job's rlimits (config.json: ``repeatr.linux.rlimits``),
    so its execve in the container measures what this does: each string with
    its NUL, one pointer each, the exec's name once more.
    """
    from repeatr.linux.rlimits import INF, job_rlimits

    soft = next(s for name, s, _h in job_rlimits() if name == "RLIMIT_STACK")
    limit = _STK_LIM // 4 * 3
    if soft != INF:
        limit = min(limit, soft // 4)
    limit = max(limit, _ARG_MAX)
    sizes = [len(os.fsencode(s)) + 1 for s in (*argv, *env)]
    if any(size > _MAX_ARG_STRLEN for size in sizes):
        return True
    return sum(sizes) + sizes[0] + (len(argv) + len(env)) * 8 > limit


def check_job(spec: Spec, oci: OciCommands, root: Root) -> None:
    """JobInvalid when the cwd is not a directory, the exec is not there, or too long."""
    if oci.style == "create":
        # runc and crun report E2BIG as the job's own failure (exit 1). runsc
        # runs the job under its own kernel's limits, which the validation of
        # the formula (2 MiB) already keeps to.
        env_strings = [f"{k}={v}" for k, v in spec.env]
        if exec_too_big(spec.argv, env_strings):
            raise JobInvalid(
                f"exec {spec.argv[0]}: argument list too long: exec and env take more than"
                " the kernel allows with this stack rlimit (a quarter of `ulimit -s`)"
            )
    rootfd = os.open(root.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        check_cwd(rootfd, spec.cwd)
        path = next((v for k, v in spec.env if k == "PATH"), None)
        found = find_exec(rootfd, spec.argv[0], path, spec.cwd)
    finally:
        os.close(rootfd)
    if path is None and "/" not in spec.argv[0]:
        set_exec_path(oci, found)


def write_bundle(oci: OciCommands) -> None:
    """The bundle dir (made if missing, as a replay after the run finds it) and its config.json."""
    os.makedirs(oci.bundle, mode=0o700, exist_ok=True)
    fd = os.open(
        os.path.join(oci.bundle, "config.json"),
        os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600,
    )
    try:
        data = memoryview(oci.config.encode())
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def set_exec_path(oci: OciCommands, path: str) -> None:
    """Put the exec's path in ``config.json`` (``process.args[0]``).

    Only when the env has no PATH: runc, crun and runsc then search nothing,
    where execvp (and the ns and chroot modes) search ``DEFAULT_PATH``. The
    job sees the path as its ``argv[0]``. (json only here: start-up time.)
    """
    import json

    config = os.path.join(oci.bundle, "config.json")
    with open(config) as f:
        cfg = json.load(f)
    cfg["process"]["args"][0] = path
    with open(config, "w") as f:
        json.dump(cfg, f, indent=1)


def hide_cgroup2() -> None:
    """crun 1.8.1 refuses hybrid cgroups: make the v2 hierarchy look controller-less.

    A bind of /dev/null over ``cgroup.controllers``, in our private mount
    namespace only. (Unmounting the v2 hierarchy instead would make crun
    create its dirs in the tmpfs under it, hidden from the host.)
    """
    if os.path.exists(CGROUP2_CONTROLLERS):
        libc.mount("/dev/null", CGROUP2_CONTROLLERS, None, libc.MS_BIND)


def restore_root_flags(init: int) -> None:
    """Make the created container's root mount nodev and nosuid again.

    The root we assemble is nodev,nosuid (a device node in a ware opens
    nothing), but crun 1.8.1 bind-mounts it and remounts the bind with no
    flags, which clears both. Between ``create`` and ``start`` the container
    is fully mounted and nothing of the job runs yet: a child joins its mount
    namespace (where ``/`` is the container's root) and sets the flags on that
    one mount (not recursively: the runtime's /dev holds the nodes it made).
    A no-op for runc, which keeps them.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(f"/proc/{init}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            libc.setns(fd, libc.CLONE_NEWNS)
            libc.mount_setattr(
                libc.AT_FDCWD, "/", 0, attr_set=libc.MOUNT_ATTR_NODEV | libc.MOUNT_ATTR_NOSUID
            )
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise ExecutorError(
            "cannot make the container's root nodev,nosuid (mount_setattr in its mount namespace)"
        )


# --- processes ---------------------------------------------------------------
def spawn(argv: list[str], devnull: int, *, quiet: bool) -> int:
    """fork+exec ``argv``; stdin /dev/null, stdout (and stderr if ``quiet``) too."""
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(devnull, 0)
            if quiet:
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            default_oom_score()  # the runtime's, hence the job's: not the invoker's
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def call(argv: list[str], devnull: int, timeout: float = TEARDOWN_TIMEOUT) -> int:
    """Run a runtime command to completion, quietly; its exit code (SIGKILLed after ``timeout``)."""
    pid = spawn(argv, devnull, quiet=True)
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def logged_error(log: str) -> str | None:
    """The last error-level entry of the runtime's log, if any."""
    msg = last_error(log)
    return None if msg.startswith("(") else msg


def last_error(log: str) -> str:
    """The runtime's last logged error (runc/crun log JSON lines; runsc text)."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if line.startswith("{"):
            import json  # only on this error path: start-up time

            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg", line))
        elif "error" in line.lower() or "fatal" in line.lower():
            return line
    return "(no error logged)"


class Teardown:
    """``delete -f``, the state dir and leftover cgroup dirs; runs once."""

    def __init__(self, box: Sandbox, oci: OciCommands, devnull: int) -> None:
        self.box = box
        self.oci = oci
        self.devnull = devnull
        self.need_delete = True
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        if self.need_delete:
            call(self.oci.delete, self.devnull)
        self.box.reap()  # runsc delete can leave its gofer to us
        for path in cgroups.ours():
            if os.path.basename(path) == self.oci.cgroup:
                cgroups.remove_dir(path)
        left = remove_tree(self.oci.state)
        if left:  # best effort: the next run's gc catches leftovers
            raise OSError(f"the runtime's state dir is left: {'; '.join(left)}")


# --- the run -----------------------------------------------------------------
def run(box: Sandbox, spec: Spec, root: Root) -> bool:
    """Start the job with the runtime over the assembled ``root``, wait, report."""
    oci = spec.oci
    if oci is None:
        raise ExecutorError("sandbox protocol: an oci spec without runtime commands")
    if oci.hide_cgroup2:
        hide_cgroup2()
    write_bundle(oci)
    check_job(spec, oci, root)
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    teardown = Teardown(box, oci, devnull)
    box.cleanups.append(teardown)
    timeout = spec.limits.timeout
    if oci.style == "run":
        pid = spawn(oci.run, devnull, quiet=False)
        box.job_pid = pid
        box.control.report(Started(pid=pid))
        status, timed_out = box.wait_job(pid, timeout)
        box.job_pid = 0
        code = os.waitstatus_to_exitcode(status)
        teardown.need_delete = timed_out or code < 0
        box.reap()
        if code == RUNTIME_FAILED and not timed_out and (err := logged_error(oci.log)):
            teardown()
            raise ExecutorError(f"{oci.name} run failed: {err}",
                                hint=f"replay it by hand: {' '.join(oci.run)}")
        if code > 128 and not timed_out:  # the runtime's 128+N: the job died of signal N
            status = code - 128
        teardown()
        release.release(root, root.layers, spec.outputs)
        box.finish(box.exit_report(status, timed_out, False))
        return True

    pid = spawn(oci.create, devnull, quiet=False)  # stdout/stderr: the job's pipes
    box.job_pid = pid
    status, _ = box.wait_job(pid, None)  # exits if the parent goes
    box.job_pid = 0
    if status != 0:
        raise ExecutorError(
            f"{oci.name} create failed ({os.waitstatus_to_exitcode(status)}): "
            f"{last_error(oci.log)}",
            hint=f"replay it by hand: {' '.join(oci.create)}",
        )
    with open(oci.pid_file) as f:
        init = int(f.read().strip())
    box.job_pid = init
    restore_root_flags(init)
    start = spawn(oci.start, devnull, quiet=True)
    status, _ = box.wait_job(start, None)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ExecutorError(f"{oci.name} start failed ({code}): {last_error(oci.log)}")
    box.control.report(Started(pid=init))
    status, timed_out = box.wait_job(init, timeout)
    box.job_pid = 0
    box.reap()
    oom = cgroups.oom_kills(oci.cgroup) > 0
    teardown()
    release.release(root, root.layers, spec.outputs)
    box.finish(box.exit_report(status, timed_out, oom))
    return True
