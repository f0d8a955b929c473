"""Control experiments: every payload the suite relies on works without isolation.

Each attack below is run by the same tool directly on the host, as the uid
the suite's job has. It must get through: a ``BLOCKED`` in a container then
means the container stopped it, not that the payload was broken or that
this kernel forbids it anyway. Attacks this host's kernel refuses for
everyone are not here (the suite keeps them for hosts that have the
feature): no /proc/sysrq-trigger, /proc/kcore, kexec, modules or iopl in
this kernel's config; /dev/mem for uid 1000, bpf for uid 0 without
CAP_BPF (unprivileged_bpf_disabled), syslog for uid 1000 (dmesg_restrict).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import Lab

pytestmark = pytest.mark.root

#: (subcommand, arguments, uid)
CONTROLS: list[tuple[str, tuple[str, ...], int]] = [
    ("sysctl-write", ("/proc/sys/kernel/core_pattern",), 0),
    ("sysctl-write", ("/proc/sys/vm/max_map_count",), 0),
    ("userns-mount", (), 1000),
    ("unshare", (), 0),
    ("keyctl", (), 1000),
    ("perf-event-open", (), 1000),
    ("userfaultfd", (), 1000),
    ("open-by-handle", (), 0),
    ("mknod", (), 0),
    ("raw-socket", (), 0),
    ("bpf", (), 0),
    ("syslog", (), 0),
]


def host_run(tool: Path, sub: str, *args: str, uid: int) -> str:
    proc = subprocess.run(
        [os.fspath(tool), sub, *args], capture_output=True, text=True, check=True, timeout=30,
        user=uid, group=uid, extra_groups=[], cwd="/",
    )
    return proc.stdout.strip()


@pytest.mark.parametrize(
    ("sub", "args", "uid"), [pytest.param(*c, id=f"{c[0]}-{c[2]}-{'-'.join(c[1])}") for c in CONTROLS]
)
def test_payload_works_on_the_host(lab: Lab, sub: str, args: tuple[str, ...], uid: int) -> None:
    out = host_run(lab.tool, sub, *args, uid=uid)
    assert out.startswith(f"SUCCEEDED {sub} "), out


def test_kvm_node_works_on_the_host(lab: Lab) -> None:
    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm on this host")
    out = host_run(lab.tool, "open-ro", "/dev/kvm", uid=0)
    assert out.startswith("SUCCEEDED open-ro opened /dev/kvm (KVM API version"), out


def test_setuid_copy_gives_euid_0_on_the_host(lab: Lab) -> None:
    suid = lab.base / f"attack-suid-{uuid.uuid4().hex[:8]}"
    shutil.copy(lab.tool, suid)
    try:
        os.chmod(suid, 0o4755)
        assert host_run(suid, "euid", uid=1000).startswith("SUCCEEDED euid euid 0")
    finally:
        suid.unlink()


def test_process_attacks_work_on_the_host(lab: Lab) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    victim = subprocess.Popen(
        ["/bin/sleep", "600"], env={"REPEATR_ATTACK_SECRET": secret}, user=1000, group=1000,
        extra_groups=[], start_new_session=True,
    )
    try:
        pid = str(victim.pid)
        peek = host_run(lab.tool, "proc-peek", pid, secret, "/nonexistent", uid=1000)
        assert peek.startswith("SUCCEEDED proc-peek read the secret"), peek
        traced = host_run(lab.tool, "ptrace", pid, secret, uid=1000)
        assert traced.startswith("SUCCEEDED ptrace attached"), traced
        assert victim.poll() is None
        assert host_run(lab.tool, "kill", pid, uid=1000).startswith("SUCCEEDED kill")
        assert victim.wait(timeout=10) == -9
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()


def test_invoker_state_payloads_work_on_the_host(lab: Lab) -> None:
    """What a hostile invoker leaves (``attacks._hostile_invoker`` and the others)
    is what a process it starts directly has: the attacks ``invoker-*`` and
    ``fd-leak`` then see repeatr's doing, not a payload that cannot see it."""
    from .attacks import _hostile_invoker, _oom_scored_invoker

    secret = lab.new_dir("control") / "host-secret"
    secret.write_text("the host's\n")

    def invoker() -> None:
        _hostile_invoker()
        _oom_scored_invoker()
        os.umask(0o077)

    stray = os.open(secret, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for sub, expected in (
            ("signals", "SUCCEEDED signals inherited signal state"),
            ("umask", "SUCCEEDED umask umask 0077"),
            ("oom-score", "SUCCEEDED oom-score oom_score_adj 500"),
            ("fd-leak", f"SUCCEEDED fd-leak inherited fds: {stray}->{secret}"),
        ):
            proc = subprocess.run(
                [os.fspath(lab.tool), sub], capture_output=True, text=True, check=True,
                timeout=30, cwd="/", preexec_fn=invoker, pass_fds=(stray,),
            )
            assert proc.stdout.strip().startswith(expected), proc.stdout
    finally:
        os.close(stray)
