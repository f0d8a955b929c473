"""The same formulas give the same output ware IDs on ns, runc and vm.

What the job writes inside the VM reaches the host through virtiofsd, which
creates files with the guest's uid and gid; packed afterwards on the host,
outputs must hash exactly as on the container executors: modes (incl. the
sticky bit), symlinks (relative and absolute), ownership of a uid-1000 and
a uid-0 job (chown under ``governor``), and a rootfs unpacked and packed back losslessly.
One VM boot per formula.
"""

from __future__ import annotations

import pytest

from .conftest import Runner

pytestmark = pytest.mark.root

EXECUTORS = ("ns", "runc", "vm")
KEEP_IDS = {"uid": "keep", "gid": "keep"}
KEEP_ALL = {"uid": "keep", "gid": "keep", "mtime": "keep"}
WRITE = (
    "mkdir -p /task/out/d/e && echo a > /task/out/f && echo b > /task/out/d/e/x"
    " && chmod 640 /task/out/f && chmod 751 /task/out/d && chmod 1777 /task/out/d/e"
    " && ln -s f /task/out/rel && ln -s /etc/passwd /task/out/abs && mkdir /task/out/empty"
)


def _ids(runner: Runner, formula: str) -> dict[str, dict[str, str]]:
    ids = {}
    for executor in EXECUTORS:
        res = runner.run("run", formula, "--executor", executor, "--no-memo")
        assert res.code == 0, f"{executor}: {res.stderr}"
        record = res.record()
        assert record["executor"] == executor
        assert ("kernel" in record["isolation"]) == (executor == "vm")
        ids[executor] = record["results"]
    return ids


def test_uid_1000_outputs_are_identical(runner: Runner) -> None:
    f = runner.formula(
        "/bin/sh", "-c", WRITE,
        userinfo={"uid": 1000, "gid": 1000},
        outputs={"/task/out": {"packtype": "tar", "filters": KEEP_IDS}},
    )
    ids = _ids(runner, str(f))
    assert ids["vm"] == ids["ns"] == ids["runc"]


def test_uid_0_outputs_and_rootfs_roundtrip_are_identical(runner: Runner) -> None:
    f = runner.formula(
        "/bin/sh", "-c", WRITE + " && chown 1000:1000 /task/out/f /task/out/d && chown -h 1000 /task/out/rel",
        userinfo={"uid": 0, "gid": 0},
        policy="governor",  # CAP_CHOWN
        inputs={"/mnt/r": runner.busybox.ware},
        outputs={
            "/task/out": {"packtype": "tar", "filters": KEEP_IDS},
            "/mnt/r": {"packtype": "tar", "filters": KEEP_ALL},
        },
    )
    ids = _ids(runner, str(f))
    assert ids["vm"] == ids["ns"] == ids["runc"]
    assert ids["vm"]["/mnt/r"] == runner.busybox.ware
