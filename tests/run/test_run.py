"""``repeatr run`` end to end: real formulas, real wares, real namespaces."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repeatr.errors import Category
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import PACK_FLATTEN
from tests.rootfs import mountinfo, processes_with

from .conftest import Runner, wait_for

pytestmark = pytest.mark.root

EXECUTORS = ["ns", "chroot"]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_hello_record_and_streams(runner: Runner, executor: str) -> None:
    f = runner.formula("/bin/sh", "-c", "echo hello; echo oops >&2")
    res = runner.run("run", str(f), "--executor", executor)
    assert res.code == 0, res.stderr
    record = res.record()
    # The original's keys, in its order, then ours.
    assert list(record)[:5] == ["guid", "time", "formulaID", "exitCode", "results"]
    assert record["executor"] == executor
    assert record["network"] == ("none" if executor == "ns" else "host")
    assert "pid" in record["isolation"]
    assert ("net" in record["isolation"]) == (executor == "ns")
    assert record["exitCode"] == 0 and record["results"] == {}
    assert "out| hello\n" in res.stderr and "err| oops\n" in res.stderr
    ident = runner.run("formula", "id", str(f))
    assert record["formulaID"] == ident.stdout.strip()
    assert runner.work_dirs() == []


def test_failed_job_stops_make(runner: Runner) -> None:
    f = runner.formula("/bin/sh", "-c", "exit 3")
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == Category.JOB_FAILED
    assert res.record()["exitCode"] == 3
    res = runner.run("run", str(f), "--executor", "ns", "--ignore-job-exit")
    assert res.code == 0 and res.record()["exitCode"] == 3


def test_signal_exit_code(runner: Runner) -> None:
    # the job is PID 1 (init ignores its own SIGKILL): a child kills itself, sh exits 128+9
    f = runner.formula("/bin/sh", "-c", "sh -c 'kill -9 $$'; exit $?")
    res = runner.run("run", str(f), "--executor", "chroot")
    assert res.code == Category.JOB_FAILED
    assert res.record()["exitCode"] == 128 + signal.SIGKILL


def test_outputs_flatten_and_save(runner: Runner, tmp_path: Path) -> None:
    wh = tmp_path / "out-wh"
    wh.mkdir()
    f = runner.formula(
        "/bin/sh", "-c", "mkdir -p /task/out/sub && echo hi > /task/out/sub/f && chmod 640 /task/out/sub/f",
        outputs={"/task/out": {"packtype": "tar"}, "/task/none": {"packtype": "tar"}},
        save={"/task/out": f"ca+file://{wh}/"},
    )
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    results = res.record()["results"]
    assert results["/task/none"] == "tar:-"
    # The same tree made by hand and packed with the flatten filter has the same ID.
    expect = tmp_path / "expect"
    (expect / "sub").mkdir(parents=True)
    (expect / "sub" / "f").write_text("hi\n")
    os.chmod(expect / "sub" / "f", 0o640)
    os.chmod(expect, 0o755)
    os.chmod(expect / "sub", 0o755)
    assert results["/task/out"] == str(pack_dir(expect, None, filters=PACK_FLATTEN))
    h = results["/task/out"].split(":", 1)[1]
    assert (wh / h[:3] / h[3:6] / h).is_file()


def test_same_formula_same_outputs_and_memo(runner: Runner) -> None:
    f = runner.formula(
        "/bin/sh", "-c", "mkdir -p /task/o && cat /proc/sys/kernel/random/uuid > /task/o/t && echo fixed > /task/o/f",
        outputs={"/task/o": {"packtype": "tar"}},
    )
    first = runner.run("run", str(f), "--executor", "ns")
    assert first.code == 0, first.stderr
    again = runner.run("run", str(f), "--executor", "ns")
    assert again.record() == first.record()  # memo hit: the stored record, same guid
    fresh = runner.run("run", str(f), "--executor", "ns", "--no-memo")
    assert fresh.record()["guid"] != first.record()["guid"]
    assert fresh.record()["results"] != first.record()["results"]  # the job wrote a random uuid
    failing = runner.formula("/bin/false", name="fail.json")
    runner.run("run", str(failing), "--executor", "ns")
    second = runner.run("run", str(failing), "--executor", "ns")
    assert "out|" not in second.stderr and second.code == Category.JOB_FAILED  # not memoized


def test_no_memo_stores_nothing(runner: Runner) -> None:
    """``--no-memo`` neither replays nor stores: a single run (the lean path) and a batch."""
    one = runner.formula("/bin/true", name="one.json")
    two = runner.formula("/bin/true", "2", name="two.json")
    assert runner.run("run", str(one), "-e", "ns", "--no-memo").code == 0
    assert runner.run("run", str(one), str(two), "-e", "ns", "--no-memo", "-j", "2").code == 0
    memo = runner.state / "memo"
    assert not memo.exists() or not any(p.is_file() for p in memo.rglob("*"))
    assert runner.run("run", str(one), "-e", "ns").code == 0  # and without: stored
    assert any(p.is_file() for p in memo.rglob("*"))


def test_memo_hit_is_import_light(runner: Runner) -> None:
    f = runner.formula("/bin/true")
    assert runner.run("run", str(f), "--executor", "ns").code == 0
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *runner.command("run", str(f), "--executor", "ns")[1:]],
        capture_output=True, text=True, check=True,
    )
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    for heavy in ("anyio", "trio", "libarchive", "pyroute2", "isal", "asyncio", "_hashlib"):
        assert heavy not in imported, f"the memo hit path imports {heavy}"


def test_a_warm_run_imports_no_openssl_hashes(runner: Runner) -> None:
    """hashlib's OpenSSL module (or hmac, secrets: they import it) costs 3-5 ms a run.

    Every digest a run computes is of a few kB (``repeatr.hashes``); its
    random bits come from ``os.urandom``. On asyncio: trio imports them itself.
    """
    f = runner.formula("/bin/true")
    assert runner.run("run", str(f), "--executor", "ns").code == 0  # a warm cache from here
    proc = subprocess.run(
        [sys.executable, "-X", "importtime",
         *runner.command("run", str(f), "--executor", "ns", "--no-memo")[1:]],
        capture_output=True, text=True, check=True,
        env={**os.environ, "REPEATR_ASYNC_BACKEND": "asyncio"},
    )
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
    assert "repeatr.runner.run" in imported  # it ran, not a memo hit
    assert not {"hashlib", "_hashlib", "hmac", "secrets"} & imported


#: Counts the dataclasses a process defines, then runs ``repeatr`` (argv[1:]).
_COUNT_DATACLASSES = """
import dataclasses, os, sys
made = []
process = dataclasses._process_class
def counted(cls, *args, **kwargs):
    made.append(f"{cls.__module__}.{cls.__qualname__}")
    return process(cls, *args, **kwargs)
dataclasses._process_class = counted
leave = os._exit
main = os.getpid()
def report(code):  # the CLI's own exit, not its forked sandbox server's
    if os.getpid() == main:
        sys.stderr.write("DATACLASSES " + " ".join(m for m in made if m.startswith("repeatr")) + "\\n")
    leave(code)
os._exit = report
sys.argv = ["repeatr", *sys.argv[1:]]
from repeatr.cli.entry import entry
entry()
"""


def test_run_path_defines_few_dataclasses(runner: Runner) -> None:
    """A warm run defines its records as msgspec Structs, not dataclasses.

    Defining a dataclass costs ~1 ms (it generates and compiles its methods):
    the 34 a run used to define were ~45 ms of every ``repeatr run``'s CPU
    on this machine kind (a Struct: ~0.03 ms). The model's last three
    (``WareID``, ``HostMount``, ``Network``) are Structs too: with none left,
    a run does not import ``dataclasses`` and the ``inspect`` it pulls in.
    """
    f = runner.formula("/bin/true")
    assert runner.run("run", str(f), "--executor", "ns").code == 0  # a warm cache from here
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_DATACLASSES,
         *runner.command("run", str(f), "--executor", "ns", "--no-memo")[3:]],
        capture_output=True, text=True, check=True,
    )
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("DATACLASSES")]
    made = set(line.split()[1:])
    assert made == set(), made


@pytest.mark.parametrize(
    ("argv", "action"),
    [
        (("/nonexistent",), {}),
        (("no-such-command",), {}),
        (("/bin/true",), {"cwd": "/etc/passwd"}),
        (("/etc/passwd",), {}),
    ],
)
def test_job_invalid(runner: Runner, argv: tuple[str, ...], action: dict[str, str]) -> None:
    f = runner.formula(*argv, **action)
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == Category.JOB_INVALID, res.stderr
    assert runner.work_dirs() == []


def test_relative_exec_uses_formula_path(runner: Runner) -> None:
    res = runner.run("run", str(runner.formula("echo", "found")), "--executor", "ns")
    assert res.code == 0 and "out| found" in res.stderr


def test_cradle_and_userinfo(runner: Runner) -> None:
    f = runner.formula("/bin/sh", "-c", 'id; pwd; echo "$HOME $USER"; ls -ld /tmp /task')
    res = runner.run("run", str(f), "--executor", "ns")
    assert "out| uid=1000(reuser) gid=1000(reuser)" in res.stderr
    assert "out| /task\n" in res.stderr and "out| /home/reuser reuser\n" in res.stderr
    assert "drwxrwxrwt" in res.stderr
    root = runner.formula("/bin/sh", "-c", "id -u; pwd", userinfo={"uid": 0, "gid": 0}, name="r.json")
    res = runner.run("run", str(root), "--executor", "ns")
    assert "out| 0\nout| /task\n" in res.stderr
    bare = runner.formula("/bin/pwd", cradle="disable", name="bare.json")
    res = runner.run("run", str(bare), "--executor", "ns")
    assert "out| /\n" in res.stderr


def test_host_mount_inputs(runner: Runner, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "in").write_text("from host\n")
    rw = tmp_path / "rw"
    rw.mkdir()
    f = runner.formula(
        "/bin/sh", "-c", "cat /mnt/ro/in; touch /mnt/ro/x || echo ro-refused; echo w > /mnt/rw/out",
        inputs={"/mnt/ro": f"mount:ro:{ro}", "/mnt/rw": f"mount:rw:{rw}"},
        userinfo={"uid": 0, "gid": 0},
    )
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    assert "out| from host" in res.stderr and "out| ro-refused" in res.stderr
    assert not (ro / "x").exists()
    assert (rw / "out").read_text() == "w\n"


def test_inputs_unchanged_after_job_writes_everywhere(runner: Runner) -> None:
    f = runner.formula(
        "/bin/sh", "-c", "for d in / /bin /etc /usr /task; do echo x > $d/scribble; done; rm -f /bin/ls",
        userinfo={"uid": 0, "gid": 0},
    )
    assert runner.run("run", str(f), "--executor", "ns").code == 0
    verify = runner.run("cache", "verify")
    assert verify.code == 0, verify.stdout + verify.stderr
    again = runner.run("run", str(runner.formula("/bin/ls", "/bin/ls", name="ls.json")), "--executor", "ns")
    assert again.code == 0, again.stderr


def test_rootfs_roundtrip_lossless(runner: Runner) -> None:
    """unpack-lossless + pack-lossless of a rootfs gives back the same ID."""
    keep = {"uid": "keep", "gid": "keep", "mtime": "keep"}
    f = runner.formula(
        "/bin/true",
        inputs={"/mnt/r": runner.busybox.ware},
        outputs={"/mnt/r": {"packtype": "tar", "filters": keep}},
    )
    res = runner.run("run", str(f), "--executor", "ns")
    assert res.code == 0, res.stderr
    assert res.record()["results"]["/mnt/r"] == runner.busybox.ware


def test_sigkill_leaves_nothing_the_next_run_does_not_clean(runner: Runner) -> None:
    before = len(mountinfo())
    marker = "sleep 4242"
    f = runner.formula("/bin/sh", "-c", marker)
    with runner.start("run", str(f), "--executor", "ns") as proc:
        wait_for(lambda: bool(processes_with(marker)))
        assert len(runner.work_dirs()) == 1
        proc.kill()
        proc.wait(timeout=10)
    wait_for(lambda: not processes_with(marker), timeout=5)  # the job died with its run
    assert len(mountinfo()) == before  # mounts lived in the run's own namespace
    assert len(runner.work_dirs()) == 1  # the work dir is left...
    res = runner.run("run", str(runner.formula("/bin/true", name="t.json")), "--executor", "ns")
    assert res.code == 0
    assert runner.work_dirs() == []  # ...and the next invocation removed it
    assert "dead run" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_cancel_tears_down_and_exits_8(runner: Runner, sig: signal.Signals) -> None:
    marker = f"sleep 43{sig.value:02d}"
    f = runner.formula("/bin/sh", "-c", f"trap '' TERM INT HUP; {marker}; true")
    with runner.start("run", str(f), "--executor", "ns") as proc:
        wait_for(lambda: bool(processes_with(marker)))
        t0 = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == Category.CANCELLED, err
    assert not processes_with(marker)
    assert runner.work_dirs() == []


def test_gc_command_reaps_dead_work_dirs(runner: Runner) -> None:
    marker = "sleep 4343"
    with runner.start("run", str(runner.formula("/bin/sh", "-c", marker)), "-e", "ns") as proc:
        wait_for(lambda: bool(processes_with(marker)))
        proc.kill()
        proc.wait(timeout=10)
    res = runner.run("gc")
    assert res.code == 0 and "removed 1 work dirs" in res.stdout
    assert runner.work_dirs() == []


def test_bad_formula_is_usage_error(runner: Runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"formula": {"action": {"exec": ["/bin/true"], "bogus": 1}}}')
    res = runner.run("run", str(bad))
    assert res.code == Category.USAGE and "bogus" in res.stderr


@pytest.mark.parametrize("executor", ["ns", "chroot", "runc"])
def test_debug_shows_mounts_and_command_lines(runner: Runner, executor: str) -> None:
    res = runner.run("run", str(runner.formula("/bin/true")), "-e", executor, "--debug")
    assert res.code == 0, res.stderr
    assert "repeatr: mount: overlay " in res.stderr and "repeatr: mount: proc -> /proc" in res.stderr
    proc = next(line for line in res.stderr.splitlines() if "repeatr: mount: proc" in line)
    assert "/proc/kcore" in proc.split("masked:")[1] and "/proc/sys" in proc.split("read-only:")[1]
    assert ("hidepid=invisible" in proc) == (executor == "chroot")
    assert "repeatr: sandbox server: " in res.stderr and "repeatr.executors.forkserver" in res.stderr
    assert " -I -S -c " in res.stderr
    if executor == "runc":
        runtime = [line for line in res.stderr.splitlines() if line.startswith("repeatr: runtime: ")]
        assert [line.split()[2].rsplit("/", 1)[-1] for line in runtime] == ["runc"] * 3
        assert any(" create --bundle " in line for line in runtime)


@pytest.mark.parametrize(
    "executor",
    [
        "ns",
        "chroot",
        *(pytest.param(n, marks=pytest.mark.runtime(n)) for n in ("runc", "crun", "gvisor")),
    ],
)
def test_debug_replay_command_reruns_the_job(
    runner: Runner, executor: str, tmp_path: Path
) -> None:
    """The spec line and the command ``--debug`` prints rerun the job by hand,
    after the run is over (its work dir gone), with stdio on the terminal.

    An OCI runtime's too: the spec carries the bundle's config.json, which
    the helper writes (the bundle went with the work dir)."""
    f = runner.formula("/bin/sh", "-c", "echo replayed as $(id -u) in $PWD; exit 5")
    res = runner.run("run", str(f), "-e", executor, "--debug", "--no-memo")
    assert res.code == Category.JOB_FAILED, res.stderr
    lines = res.stderr.splitlines()
    spec = next(line for line in lines if line.startswith("repeatr: sandbox spec: "))
    replay = next(line for line in lines if line.startswith("repeatr: sandbox replay: "))
    spec_file = tmp_path / "SPEC.json"
    spec_file.write_text(spec.removeprefix("repeatr: sandbox spec: "))
    command = replay.removeprefix("repeatr: sandbox replay: ").split("  (SPEC.json")[0]
    assert runner.work_dirs() == []
    done = subprocess.run(
        command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 5, done.stderr
    assert done.stdout == "replayed as 1000 in /task\n"
    assert "repeatr-sandbox: exit code=5" in done.stderr


def test_work_dir_removal_reports_what_it_could_not_remove(tmp_path: Path) -> None:
    """A mount still held under a work dir is named, neither emptied nor silently ignored."""
    from repeatr import workdir
    from repeatr.linux import libc

    work = tmp_path / "run.1-2-3@h"
    (work / "upper" / "held").mkdir(parents=True)
    (work / "upper" / "file").write_text("x")
    libc.mount("tmpfs", work / "upper" / "held", "tmpfs", 0, "size=1m")
    try:
        left = workdir.remove(work, attempts=2)
        # The cause first, then the parents it kept from going.
        assert left[0].startswith(f"{work / 'upper' / 'held'}: ") and "mount point" in left[0]
        assert [x.split(":")[0] for x in left[1:]] == [str(work / "upper"), str(work)]
        assert not (work / "upper" / "file").exists()  # the rest went
    finally:
        libc.umount2(work / "upper" / "held")
    assert workdir.remove(work) == []
    assert not work.exists()
    assert workdir.remove(work) == []  # already gone: nothing to report


def test_memo_hit_needs_its_saved_outputs(runner: Runner, tmp_path: Path) -> None:
    """A record whose saved wares are gone is not replayed: the formula runs and saves again."""
    whs = [tmp_path / "wh1", tmp_path / "wh2"]
    for wh in whs:
        wh.mkdir()

    def formula(wh: Path, name: str) -> Path:
        return runner.formula(
            "/bin/sh", "-c", "echo ran; mkdir -p /task/o; echo x > /task/o/f",
            outputs={"/task/o": {"packtype": "tar"}}, save={"/task/o": f"ca+file://{wh}/"},
            name=name,
        )

    f = formula(whs[0], "one.json")
    first = runner.run("run", str(f), "--executor", "ns")
    assert first.code == 0 and "out| ran" in first.stderr, first.stderr
    h = first.record()["results"]["/task/o"].split(":", 1)[1]
    saved = [wh / h[:3] / h[3:6] / h for wh in whs]
    hit = runner.run("run", str(f), "--executor", "ns")
    assert hit.record() == first.record() and "out|" not in hit.stderr  # a hit
    saved[0].unlink()
    again = runner.run("run", str(f), "--executor", "ns")
    assert again.code == 0 and "out| ran" in again.stderr, again.stderr  # ran again...
    assert again.record()["results"] == first.record()["results"] and saved[0].is_file()
    # The same formula in another file, saving elsewhere: the formula-ID entry is
    # found, but this file's warehouse lacks the ware, so it runs (and saves) too.
    g = formula(whs[1], "two.json")
    other = runner.run("run", str(g), "--executor", "ns")
    assert other.code == 0 and "out| ran" in other.stderr and saved[1].is_file()
    assert "out|" not in runner.run("run", str(g), "--executor", "ns").stderr  # now a hit


@pytest.mark.parametrize(
    ("policy", "status"), [("routine", "2"), ("governor", "2"), ("sysad", "0")]
)
def test_policy_decides_the_seccomp_filter(runner: Runner, policy: str, status: str) -> None:
    """routine and governor run under the default profile; sysad (every capability) unfiltered."""
    f = runner.formula("/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status", policy=policy)
    res = runner.run("run", str(f), "--executor", "ns", "--debug")
    assert res.code == 0, res.stderr
    assert f"out| Seccomp:\t{status}\n" in res.stderr
    assert ("seccomp: repeatr-default/1" in res.stderr) == (policy != "sysad")


def test_gc_command_removes_dead_runs_cgroups(runner: Runner) -> None:
    """A run killed with its cgroup made leaves it; ``repeatr gc`` removes it, not a live one's."""
    from repeatr.linux import cgroups

    if "pids" not in cgroups.controllers():
        pytest.skip("no pids cgroup controller on this host")
    dead = subprocess.Popen(["sleep", "60"])
    dead.kill()
    dead.wait()
    base = Path(cgroups.ROOT) / "pids"
    gone = base / f"{cgroups.PREFIX}{dead.pid}-0123abcd"
    alive = base / f"{cgroups.PREFIX}{os.getpid()}-0123abcd"
    gone.mkdir()
    alive.mkdir()
    try:
        res = runner.run("gc")
        assert res.code == 0, res.stderr
        assert f"removed cgroup {gone}" in res.stderr
        assert not gone.exists()
        assert alive.exists()
    finally:
        for group in (gone, alive):
            if group.exists():
                group.rmdir()
