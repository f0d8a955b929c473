"""Every attack of the suite: a name (a row of the table in docs/executors.md) and
a function that mounts it on one executor and judges the outcome.

An attack function returns a ``Verdict``; it does not assert. The generated
tests assert ``stopped`` for the table's ``stops`` cells and ``not stopped``
for the ``no`` cells they can check (``test_attacks.py``). Judging never
trusts the job alone when the effect would be on the host: a marker on the
host, a host process still alive, a host directory's mode, a shelf's exact
hash, a run that ends on time. An attack that could not be tried at all (the
tool printed nothing, the run broke for another reason) raises: it proves
nothing either way.
"""

from __future__ import annotations

import gzip
import os
import re
import select
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repeatr.errors import Category
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import PACK_FLATTEN

from .conftest import Attacker, Run, kill_marked, save, tree_state


@dataclass(frozen=True)
class Verdict:
    stopped: bool
    evidence: str


class AttackNotTried(AssertionError):
    """The attack did not run as designed: no verdict either way."""


Attack = Callable[[Attacker], Verdict]
ATTACKS: dict[str, Attack] = {}

#: Exit codes of a run repeatr refused before the job started (a policy an
#: executor cannot honour safely, a bad input): the attack never ran.
REFUSED = {Category.USAGE, Category.EXECUTOR, Category.JOB_INVALID, Category.ASSEMBLY_INVALID}


def attack(name: str) -> Callable[[Attack], Attack]:
    def register(fn: Attack) -> Attack:
        assert name not in ATTACKS, f"attack {name} registered twice"
        ATTACKS[name] = fn
        return fn

    return register


def tool_verdict(run: Run, sub: str, *, refusal_ok: bool = False) -> Verdict:
    """The attack tool's own result line, which must be there."""
    found = run.result(sub)
    if found is None:
        if refusal_ok and run.code in REFUSED:
            return Verdict(True, f"repeatr refused the run (exit {run.code}): {run.stderr[-500:]}")
        raise AttackNotTried(f"the attack tool printed no result for {sub}: {run.describe()}")
    word, detail = found
    return Verdict(word == "BLOCKED", f"{word} {detail}")


def run_tool(a: Attacker, sub: str, *args: str, refusal_ok: bool = False, **formula: Any) -> Verdict:
    run = a.run(["/bin/attack", sub, *args], **formula)
    return tool_verdict(run, sub, refusal_ok=refusal_ok)


# --- the seven findings ------------------------------------------------


@attack("sysctl-kernel")
def sysctl_kernel(a: Attacker) -> Verdict:
    return run_tool(
        a, "sysctl-write", "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", uid=0
    )


@attack("sysctl-vm")
def sysctl_vm(a: Attacker) -> Verdict:
    return run_tool(
        a, "sysctl-write", "/proc/sys/vm/max_map_count", "/proc/sys/vm/overcommit_memory", uid=0
    )


@attack("sysctl-net")
def sysctl_net(a: Attacker) -> Verdict:
    """chroot shares the host's network namespace: its net sysctls are the host's."""
    return run_tool(
        a, "sysctl-write", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/core/somaxconn", uid=0
    )


@attack("ware-device-nodes")
def ware_device_nodes(a: Attacker) -> Verdict:
    paths = [f"/devs/{name}" for name in a.lab.device_names]
    return run_tool(a, "open-ro", *paths, inputs={"/devs": a.lab.devices})


#: Modules the helper could pick up from the caller's cwd if that were on its
#: sys.path; each one leaves a marker when imported. Two runs: the standard
#: library's modules (the issue's ``signal.py``), then a ``repeatr`` package,
#: which would shadow the helper's own imports before any of the first set.
PLANTED_MODULES = (
    ("signal.py", "os.py", "select.py", "errno.py", "stat.py", "time.py", "socket.py",
     "json.py", "encodings/__init__.py", "sitecustomize.py", "usercustomize.py"),
    ("repeatr/__init__.py", "repeatr/executors/__init__.py"),
)


@attack("helper-imports-cwd")
def helper_imports_cwd(a: Attacker) -> Verdict:
    marker = a.dir / "imported"
    for n, modules in enumerate(PLANTED_MODULES):
        cwd = a.dir / f"caller-cwd-{n}"
        for rel in modules:
            path = cwd / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"open({os.fspath(marker)!r}, 'a').write({rel!r} + '\\n')\n")
        run = a.run(["/bin/attack", "euid"], host_cwd=cwd)
        if marker.exists():
            return Verdict(False, f"imported from the caller's cwd: {marker.read_text().split()}")
        if run.result("euid") is None:
            raise AttackNotTried(f"the run did not get to the job: {run.describe()}")
    return Verdict(True, "nothing imported from the caller's cwd")


@attack("chroot-twice")
def chroot_twice(a: Attacker) -> Verdict:
    marker = a.dir / "escaped"
    run = a.run(["/bin/attack", "chroot-twice", os.fspath(marker)], uid=0, policy="governor")
    if marker.exists():
        return Verdict(False, f"a file appeared on the host at {marker}")
    return Verdict(True, f"no file on the host; {tool_verdict(run, 'chroot-twice', refusal_ok=True).evidence}")


@attack("host-proc-peek")
def host_proc_peek(a: Attacker) -> Verdict:
    secret = f"secret-{uuid.uuid4().hex}"
    victim = a.host_process(uid=1000, secret=secret)
    hostfile = a.dir / "host-secret"
    hostfile.write_text(secret)
    hostfile.chmod(0o644)
    return run_tool(a, "proc-peek", str(victim.pid), secret, os.fspath(hostfile))


@attack("host-path")
def host_path(a: Attacker) -> Verdict:
    """Host files by their host paths: a file next to the run, the cache's meta
    dir, the run's own work dir (all readable by anyone on the host)."""
    secret = f"secret-{uuid.uuid4().hex}"
    files = [a.dir / "host-secret", a.lab.cache / "host-secret"]
    for f in files:
        f.write_text(secret)
        f.chmod(0o644)
    try:
        return run_tool(a, "read-files", secret, *(os.fspath(f) for f in files))
    finally:
        for f in files:
            f.unlink()


@attack("kill-host-process")
def kill_host_process(a: Attacker) -> Verdict:
    mine = a.host_process(uid=1000, secret="same-uid")
    roots = a.host_process(uid=0, secret="root")
    run = a.run(["/bin/attack", "kill", str(mine.pid), str(roots.pid)])
    tool = tool_verdict(run, "kill")
    dead = [p.pid for p in (mine, roots) if p.poll() is not None]
    if dead:
        return Verdict(False, f"host processes killed: {dead} ({tool.evidence})")
    return Verdict(True, f"host processes alive ({tool.evidence})")


@contextmanager
def victim_job(
    a: Attacker, marker: str, script: str, **formula: Any
) -> Iterator[subprocess.Popen[str]]:
    """Another job on the same executor, running ``script`` then waiting until told to end.

    Its command line has ``victim-<marker>`` (how the attacker finds it). It
    prints READY when ``script`` is done; it ends when the test creates the
    file ``go`` in a host dir mounted read-only at /ctl (or after 10 s).
    """
    ctl = a.dir / "ctl"
    ctl.mkdir()
    # gVisor does not see a file created on the host under a bind it already
    # looked at: the victim also ends by itself after 10 s.
    body = (
        f"{script}; echo READY; i=0; while [ ! -e /ctl/go ] && [ $i -lt 200 ]; "
        "do sleep 0.05; i=$((i+1)); done"
    )
    path = a.formula(
        ["/bin/sh", "-c", body, f"victim-{marker}"],
        inputs={"/ctl": f"mount:ro:{ctl}"},
        name="victim.json",
        **formula,
    )
    proc = a.start(path)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = ""
    while "out| READY" not in seen:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AttackNotTried(f"the victim job did not start: {seen}{proc.stderr.read()}")
        if select.select([proc.stderr], [], [], 0.5)[0]:
            seen += proc.stderr.readline()
    try:
        yield proc
    finally:
        (ctl / "go").touch()


@attack("other-job-root")
def other_job_root(a: Attacker) -> Verdict:
    marker = uuid.uuid4().hex
    with victim_job(a, marker, f"echo {marker} > /task/secret"):
        return run_tool(a, "job-root", marker, "read", "/task/secret")


@attack("other-job-output")
def other_job_output(a: Attacker) -> Verdict:
    marker = uuid.uuid4().hex
    with victim_job(
        a, marker, "mkdir /task/out && echo victim > /task/out/f",
        outputs={"/task/out": {"packtype": "tar"}},
    ) as victim:
        tool = run_tool(a, "job-root", marker, "write", "/task/out/evil")
    out, err = victim.communicate(timeout=60)
    expect = a.dir / "expect"
    expect.mkdir()
    (expect / "f").write_text("victim\n")
    expect.chmod(0o755)
    (expect / "f").chmod(0o644)
    want = str(pack_dir(expect, None, filters=PACK_FLATTEN))
    got = Run(victim.returncode, out, err, 0).record()["results"]["/task/out"]
    if got != want:
        return Verdict(False, f"the other job's output changed: {got} != {want} ({tool.evidence})")
    return Verdict(True, f"the other job's output is as it made it ({tool.evidence})")


def _no_linger(a: Attacker, run: Run, marker: str, tool: Verdict) -> Verdict:
    left = kill_marked(f"linger-{marker}")
    if run.timed_out or run.seconds > 20:
        return Verdict(False, f"the run took {run.seconds:.1f} s; left behind: {left} ({tool.evidence})")
    if left:
        return Verdict(False, f"processes outlived the run: {left} ({tool.evidence})")
    return Verdict(True, f"the run ended in {run.seconds:.1f} s, nothing left ({tool.evidence})")


@attack("kill-helper")
def kill_helper(a: Attacker) -> Verdict:
    marker = uuid.uuid4().hex
    run = a.run(["/bin/attack", "kill-parent", marker], timeout=40)
    found = run.result("kill-parent")
    tool = Verdict(True, "no result line (the job's output may be lost with its helper)")
    if found is not None:
        tool = Verdict(found[0] == "BLOCKED", f"{found[0]} {found[1]}")
    elif not run.timed_out and "helper" not in run.stderr:
        raise AttackNotTried(f"the job did not run: {run.describe()}")
    return _no_linger(a, run, marker, tool)


@attack("daemon")
def daemon(a: Attacker) -> Verdict:
    marker = uuid.uuid4().hex
    run = a.run(["/bin/attack", "daemon", marker], timeout=40)
    found = run.result("daemon")
    if found is None and not run.timed_out:
        raise AttackNotTried(f"the job did not run: {run.describe()}")
    return _no_linger(a, run, marker, Verdict(True, "daemon started"))


@attack("cradle-host-tmp")
def cradle_host_tmp(a: Attacker) -> Verdict:
    host = a.dir / "host-tmp"
    host.mkdir()
    host.chmod(0o700)
    before = os.stat(host)
    run = a.run(["/bin/attack", "euid"], inputs={"/tmp": f"mount:rw:{host}"})
    after = os.stat(host)
    changed = [
        f"{what} {old:o} -> {new:o}" for what, old, new in (
            ("mode", before.st_mode, after.st_mode),
            ("uid", before.st_uid, after.st_uid),
            ("gid", before.st_gid, after.st_gid),
        ) if old != new
    ]
    if changed:
        return Verdict(False, f"the host dir changed: {', '.join(changed)}")
    if run.result("euid") is None and run.code not in REFUSED:
        raise AttackNotTried(f"the run did not get to the job: {run.describe()}")
    return Verdict(True, f"the host dir is still {stat.filemode(after.st_mode)} (exit {run.code})")


@attack("userns-mount")
def userns_mount(a: Attacker) -> Verdict:
    return run_tool(a, "userns-mount")


# --- processes and other jobs -----------------------------------------------


@attack("ptrace-host")
def ptrace_host(a: Attacker) -> Verdict:
    secret = f"secret-{uuid.uuid4().hex}"
    victim = a.host_process(uid=1000, secret=secret)
    return run_tool(a, "ptrace", str(victim.pid), secret)


# --- read-only inputs, mounts, symlinks ---------------------------------------


@attack("ro-mount-write")
def ro_mount_write(a: Attacker) -> Verdict:
    host = a.dir / "ro-input"
    host.mkdir()
    (host / "file").write_text("host data\n")
    host.chmod(0o777)  # writable to anyone on the host: only the mount's ro stands in the way
    before = tree_state(host)
    tool = run_tool(a, "ro-mount", "/ro", uid=0, inputs={"/ro": f"mount:ro:{host}"})
    if tree_state(host) != before:
        return Verdict(False, f"the read-only host dir changed ({tool.evidence})")
    return tool


@attack("ware-shelf-write")
def ware_shelf_write(a: Attacker) -> Verdict:
    """Change files of the rootfs ware, then write into the shelves' host paths."""
    shelf = a.lab.shelf(a.lab.rootfs)
    before = tree_state(shelf) if shelf.exists() else None
    script = "echo attack >> /etc/passwd && chmod 700 /bin && exec /bin/attack overlay-lower"
    run = a.run(["/bin/sh", "-c", script], uid=0, inputs={"/devs": a.lab.devices})
    tool = tool_verdict(run, "overlay-lower")
    if before is not None and tree_state(shelf) != before:
        return Verdict(False, f"the shelf {shelf} changed ({tool.evidence})")
    if (shelf / "attack-marker").exists():
        return Verdict(False, f"a file appeared in the shelf {shelf} ({tool.evidence})")
    return tool


def symlink_ware(a: Attacker, target: Path) -> str:
    """A ware holding ``link``, a symlink to the host path ``target``."""
    tree = a.dir / "symlink-ware"
    tree.mkdir()
    (tree / "link").symlink_to(target)
    return save(a.lab.warehouse, tree)


def host_dir_untouched(host: Path, before: os.stat_result, run: Run, sub: str) -> Verdict:
    entries = sorted(os.listdir(host))
    after = os.stat(host)
    if entries:
        return Verdict(False, f"the run wrote through the symlink onto the host: {entries}")
    if (after.st_mode, after.st_uid, after.st_gid) != (before.st_mode, before.st_uid, before.st_gid):
        return Verdict(False, f"the run changed the host dir {host}: {stat.filemode(after.st_mode)} "
                       f"{after.st_uid}:{after.st_gid}")
    if run.result(sub) is None and run.code not in REFUSED:
        raise AttackNotTried(f"the run neither ran nor was refused: {run.describe()}")
    return Verdict(True, f"the host dir is as it was (exit {run.code})")


@attack("symlink-mount-point")
def symlink_mount_point(a: Attacker) -> Verdict:
    """A ware whose ``link`` is a symlink to a host dir, with an input mounted under it."""
    host = a.dir / "host-target"
    host.mkdir()
    before = os.stat(host)
    source = a.dir / "mounted"
    source.mkdir()
    (source / "f").write_text("x\n")
    run = a.run(
        ["/bin/attack", "euid"],
        inputs={"/opt": symlink_ware(a, host), "/opt/link/inner": f"mount:ro:{source}"},
    )
    return host_dir_untouched(host, before, run, "euid")


@attack("cradle-symlink")
def cradle_symlink(a: Attacker) -> Verdict:
    """The cradle's cwd and home dir under a ware's symlink to a host dir."""
    host = a.dir / "host-target"
    host.mkdir()
    host.chmod(0o700)
    before = os.stat(host)
    run = a.run(
        ["/bin/attack", "euid"],
        inputs={"/opt": symlink_ware(a, host)},
        cwd="/opt/link/work",
        userinfo={"uid": 1000, "gid": 1000, "homedir": "/opt/link/home"},
    )
    return host_dir_untouched(host, before, run, "euid")


@attack("symlink-output")
def symlink_output(a: Attacker) -> Verdict:
    secret = f"secret-{uuid.uuid4().hex}"
    host = a.dir / "host-secrets"
    host.mkdir()
    (host / "secret").write_text(secret)
    wh = a.dir / "out-warehouse"
    wh.mkdir()
    script = f"mkdir /task/out && ln -s {host} /task/out/sub && ln -s {host} /task/link"
    path = a.formula(
        ["/bin/sh", "-c", script],
        outputs={"/task/out": {"packtype": "tar"}, "/task/link": {"packtype": "tar"}},
    )
    import json

    doc = json.loads(path.read_text())
    doc["context"]["saveUrls"] = {p: f"ca+file://{wh}/" for p in ("/task/out", "/task/link")}
    path.write_text(json.dumps(doc))
    run = a.run_formula(path)
    if run.code not in (0, Category.PACK_INVALID):
        raise AttackNotTried(f"the run failed otherwise: {run.describe()}")
    leaked = []
    for dirpath, _, files in os.walk(wh):
        for name in files:
            data = Path(dirpath, name).read_bytes()
            with suppress(OSError):
                data = gzip.decompress(data)
            if secret.encode() in data:
                leaked.append(name)
    if leaked:
        return Verdict(False, f"a saved output holds the host file: {leaked}")
    return Verdict(True, f"no saved output holds the host file (exit {run.code})")


# --- system calls --------------------------------------------------------------


def _syscall(sub: str, uid: int) -> Attack:
    def fn(a: Attacker) -> Verdict:
        return run_tool(a, sub, uid=uid)

    return fn


def _hostile_invoker() -> None:
    """In the child that execs ``repeatr run``: what a shell or a CI runner may leave
    (``trap '' QUIT``, ``nohup``, a blocked SIGUSR2), inherited through every exec."""
    for sig in (signal.SIGQUIT, signal.SIGUSR1, signal.SIGTSTP, signal.SIGTTOU, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2, signal.SIGWINCH})


@attack("invoker-signals")
def invoker_signals(a: Attacker) -> Verdict:
    """The job's signal state is its own, not its invoker's: a job that ignores SIGQUIT
    or blocks SIGUSR2 because `repeatr run` was started so is not hermetic, and a
    blocked or ignored signal is one its own supervisor cannot use on it."""
    run = a.run(["/bin/attack", "signals"], uid=1000, invoker=_hostile_invoker)
    return tool_verdict(run, "signals")


@attack("invoker-umask")
def invoker_umask(a: Attacker) -> Verdict:
    """The job's umask is 0022, as runc and crun give, not its invoker's: the
    modes of what it writes (its outputs' hashes) must not depend on who ran it."""
    run = a.run(["/bin/attack", "umask"], uid=1000, invoker=lambda: os.umask(0o077) and None)
    return tool_verdict(run, "umask")


#: What the invoker sets (soft limits, and NOFILE's hard one lowered), and what the
#: job must see instead (``repeatr.linux.rlimits``): busybox ``ulimit -S`` of core
#: (blocks), stack (KiB), open files.
INVOKER_RLIMITS = {"RLIMIT_CORE": 1 << 20, "RLIMIT_STACK": 4 << 20, "RLIMIT_NOFILE": 512}
JOB_LIMITS = ["0", "8192", "1024"]


def _rlimited_invoker() -> None:
    import resource

    for name, soft in INVOKER_RLIMITS.items():
        number = getattr(resource, name)
        hard = resource.getrlimit(number)[1]
        if name == "RLIMIT_NOFILE":
            hard = min(hard, 4000)  # a lower hard limit too: the job's is capped, not raised
        resource.setrlimit(number, (soft, hard))


@attack("invoker-rlimits")
def invoker_rlimits(a: Attacker) -> Verdict:
    """The job's resource limits are the documented defaults, not its invoker's:
    ``ulimit -c``, ``-s``, ``-n`` of whoever ran ``repeatr run`` would otherwise make
    a job's behaviour (a core file, running out of fds or stack) depend on them."""
    script = "echo limits $(ulimit -Sc) $(ulimit -Ss) $(ulimit -Sn)"
    run = a.run(["/bin/sh", "-c", script], uid=1000, invoker=_rlimited_invoker)
    seen = [line.split()[1:] for line in run.job_lines() if line.startswith("limits ")]
    if len(seen) != 1 or len(seen[0]) != len(JOB_LIMITS):
        raise AttackNotTried(f"the job printed no limits: {run.describe()}")
    if seen[0] != JOB_LIMITS:
        return Verdict(False, f"the job's soft core, stack, nofile: {seen[0]}, not {JOB_LIMITS}")
    return Verdict(True, f"the job's soft core, stack, nofile are the defaults: {seen[0]}")


#: The invoker's oom_score_adj. A service's ``OOMScoreAdjust=-900`` is the harmful
#: one; a value below 0 needs CAP_SYS_RESOURCE, which this host's root lacks
#: (spec/host-notes.md), and either sign is passed on by the same inheritance.
INVOKER_OOM_SCORE = 500


def _oom_scored_invoker() -> None:
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    try:
        os.write(fd, str(INVOKER_OOM_SCORE).encode())
    finally:
        os.close(fd)


@attack("invoker-oom-score")
def invoker_oom_score(a: Attacker) -> Verdict:
    """The job's oom_score_adj is 0, not its invoker's: a job started by an
    OOM-protected service would otherwise be the last process the OOM killer
    picks, and a job without a memory limit would have the host's other
    processes killed in its place."""
    run = a.run(["/bin/attack", "oom-score"], uid=1000, invoker=_oom_scored_invoker)
    return tool_verdict(run, "oom-score")


for _name, _sub, _uid in (
    ("mount", "mount", 0),
    ("unshare", "unshare", 0),
    ("setns", "setns", 0),
    ("keyctl", "keyctl", 1000),
    ("bpf", "bpf", 0),
    ("perf-event-open", "perf-event-open", 1000),
    ("userfaultfd", "userfaultfd", 1000),
    ("open-by-handle", "open-by-handle", 0),
    ("kernel-load", "kernel-load", 0),
    ("iopl", "iopl", 0),
    ("mknod", "mknod", 0),
    ("raw-socket", "raw-socket", 0),
    ("tiocsti", "tiocsti", 1000),
    ("sethostname", "sethostname", 0),
    ("reboot", "reboot", 0),
    ("parent-peek", "parent-peek", 0),
):
    attack(_name)(_syscall(_sub, _uid))


@attack("fd-leak")
def fd_leak(a: Attacker) -> Verdict:
    """Only 0, 1, 2, though ``repeatr run`` itself was started holding more (a shell's
    ``9<file``): the server, each helper and the job's start each pass on only
    what they mean to."""
    secret = a.dir / "host-secret"
    secret.write_text("the host's\n")
    stray = os.open(secret, os.O_RDONLY | os.O_CLOEXEC)  # pass_fds: inheritable in the child
    try:
        run = a.run(["/bin/attack", "fd-leak"], uid=1000, pass_fds=(stray,))
    finally:
        os.close(stray)
    return tool_verdict(run, "fd-leak")


@attack("syslog")
def syslog(a: Attacker) -> Verdict:
    """Reading *a* kernel log is not the attack; reading the host's is."""
    tool = run_tool(a, "syslog")
    if tool.stopped:
        return tool
    last = re.sub(r"^<\d+>", "", tool.evidence.partition("last line: ")[2]).strip()
    host = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    if last and last in host:
        return Verdict(False, f"read the host's kernel log ({tool.evidence})")
    return Verdict(True, f"a kernel log that is not the host's ({tool.evidence})")


@attack("setuid-root")
def setuid_root(a: Attacker) -> Verdict:
    run = a.run(["/bin/attack-suid", "euid"])
    return tool_verdict(run, "euid")


# --- /proc and /sys -----------------------------------------------------------


@attack("sysrq-trigger")
def sysrq_trigger(a: Attacker) -> Verdict:
    return run_tool(a, "open-wo", "/proc/sysrq-trigger", uid=0)


@attack("proc-kcore")
def proc_kcore(a: Attacker) -> Verdict:
    return run_tool(a, "open-ro", "/proc/kcore", uid=0)


@attack("host-sys")
def host_sys(a: Attacker) -> Verdict:
    return run_tool(
        a, "open-wo",
        "/sys/kernel/uevent_helper",
        "/sys/fs/cgroup/memory/release_agent",
        "/sys/fs/cgroup/pids/release_agent",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/power/state",
        uid=0,
    )


# --- the host's network ---------------------------------------------------------


@contextmanager
def serve(listener: socket.socket, secret: str) -> Iterator[None]:
    """Accept connections on ``listener`` and send ``secret`` to each, until the end."""
    listener.listen(8)
    listener.settimeout(0.2)
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(secret.encode())

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        listener.close()


@attack("host-ipc")
def host_ipc(a: Attacker) -> Verdict:
    """A SysV message queue made on the host: visible only in the host's ipc namespace."""
    made = subprocess.run(["ipcmk", "-Q", "-p", "0666"], capture_output=True, text=True, check=True)
    qid = made.stdout.split(":")[-1].strip()
    try:
        listing = subprocess.run(["ipcs", "-q"], capture_output=True, text=True, check=True).stdout
        key = next(f[0] for f in (line.split() for line in listing.splitlines()) if len(f) > 1 and f[1] == qid)
        return run_tool(a, "sysv-ipc", qid, key)
    finally:
        subprocess.run(["ipcrm", "-q", qid], check=True)


@attack("abstract-socket")
def abstract_socket(a: Attacker) -> Verdict:
    name = f"repeatr-attack-{uuid.uuid4().hex}"
    secret = uuid.uuid4().hex
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    with serve(listener, secret):
        return run_tool(a, "abstract-socket", name, secret)


@attack("host-loopback")
def host_loopback(a: Attacker) -> Verdict:
    secret = uuid.uuid4().hex
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with serve(listener, secret):
        return run_tool(a, "host-loopback", str(port), secret)
