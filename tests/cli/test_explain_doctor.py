"""``explain`` and ``doctor``: what would happen, and what this host offers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import FIXTURES, WITH_BASE, Repeatr

pytestmark = pytest.mark.root


def _formula(tmp_path: Path, **action: object) -> Path:
    f = tmp_path / "f.json"
    f.write_text(json.dumps({
        "formula": {"inputs": {"/": WITH_BASE, "/src": f"mount:ro:{tmp_path}"},
                    "action": {"exec": ["/bin/true"], **action}},
        "context": {"fetchUrls": {"/": [f"file://{FIXTURES}/tar_withBase.tgz"]}},
    }))
    return f


def test_explain(repeatr: Repeatr, tmp_path: Path) -> None:
    f = _formula(tmp_path, network="host")
    res = repeatr("explain", str(f), "--format", "json")
    assert res.code == 0, res.stderr
    (report,) = res.events()
    assert report["formulaID"] == repeatr("formula", "id", str(f)).stdout.strip()
    assert report["inputs"]["/"] == {"source": WITH_BASE, "cached": False}
    assert report["inputs"]["/src"]["cached"] is None
    assert report["formula"]["action"]["cwd"] == "/task"  # the cradle's defaults, shown
    assert report["executor"] == "ns" and report["network"] == "host"
    assert any(r.startswith("gvisor:") for r in report["executorReasons"])
    assert report["memoized"] is False
    assert (report["policy"], report["seccomp"]) == ("routine", "repeatr-default/1")
    text = repeatr("explain", str(f)).stdout
    assert "not cached: will be fetched" in text and "executor    ns" in text
    assert "seccomp     repeatr-default/1 (policy routine)" in text


def test_explain_sysad_runs_unfiltered(repeatr: Repeatr, tmp_path: Path) -> None:
    res = repeatr("explain", str(_formula(tmp_path, policy="sysad")), "--format", "json")
    (report,) = res.events()
    assert (report["policy"], report["seccomp"]) == ("sysad", None)


def test_explain_says_when_no_executor_fits(repeatr: Repeatr, tmp_path: Path) -> None:
    res = repeatr("explain", str(_formula(tmp_path, network="none")), "-e", "chroot")
    assert res.code == 0
    assert "executor    NONE" in res.stdout and "network 'none'" in res.stdout


def test_doctor_reports_state(repeatr: Repeatr) -> None:
    res = repeatr("doctor", "--no-measure", "--format", "json")
    (report,) = res.events()
    assert {e["name"] for e in report["executors"]} >= {"ns", "chroot", "runc", "crun", "gvisor"}
    assert report["state"]["cache"]["shelves"] == 0
    assert report["state"]["net"]["path"] == "/run/repeatr/net"
    assert report["kernel"]["seccomp"]["profile"] == "repeatr-default/1"
    assert report["kernel"]["seccomp"]["libseccomp"].startswith("2.")
