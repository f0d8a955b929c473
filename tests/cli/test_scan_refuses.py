"""``repeatr scan`` gives no ID to an archive ``repeatr unpack`` refuses (issue 12.6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category
from tests.fileset import hostile as h

from .conftest import Repeatr

CASES = {
    "hardlink": [h.file("a", b"content"), h.hardlink("b", "a")],
    "type change": [h.file("x", b"1"), h.directory("x")],
    "too deep": [h.file("/".join(["d"] * 300))],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scan_refuses_what_unpack_refuses(repeatr: Repeatr, tmp_path: Path, case: str) -> None:
    archive = tmp_path / "w.tgz"
    archive.write_bytes(h.build(CASES[case]))
    scanned = repeatr("scan", str(archive))
    unpacked = repeatr(
        "unpack", "tar:5y6NvK6GBPQ6CcuNyJyWtSrMAJQ4LVrAcZSoCRAzMSk5o53pkTYiieWyRivfvhZwhZ",
        "out", "--source", f"file://{archive}", "--filter", "lossless",
    )
    assert scanned.code == unpacked.code == Category.WARE_CORRUPT, (scanned, unpacked)
    assert scanned.stdout == ""
    assert "Traceback" not in scanned.stderr + unpacked.stderr
    assert not (tmp_path / "out").exists()
