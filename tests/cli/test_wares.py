"""Every ware vector of compat.md, reproduced through the command line."""

from __future__ import annotations

import os
from pathlib import Path

from repeatr.errors import Category
from tests.rio import ZIP_WITH_BASE

from .conftest import FIXTURES, SANS_BASE, WITH_BASE, Repeatr

EMPTY_DIR_VECTOR = "tar:26pqLaHWGFWi7WuBrreDtcs9ZR9dtmdQ3cCHySzb9Z6kBksDXg7u5tN6yvDUGyTHiN"


def test_scan_published_vectors(repeatr: Repeatr) -> None:
    assert repeatr("scan", str(FIXTURES / "tar_withBase.tgz")).stdout.strip() == WITH_BASE
    assert repeatr("scan", f"file://{FIXTURES}/tar_sansBase.tgz").stdout.strip() == SANS_BASE


def _vector_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    (d / "bar").touch()
    os.chmod(d / "bar", 0o664)
    os.chmod(d, 0o775)
    for p in (d / "bar", d):
        os.chown(p, 1000, 1000)
        os.utime(p, (1262304000, 1262304000))
    return d


def test_pack_dir_vector(repeatr: Repeatr, tmp_path: Path) -> None:
    d = _vector_dir(tmp_path)
    res = repeatr("pack", str(d), "--filter", "uid=keep,gid=keep,mtime=keep")
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == EMPTY_DIR_VECTOR
    # The default (conservative) filter sets exactly these values, so the ID is the same.
    os.chown(d / "bar", 0, 0)
    assert repeatr("pack", str(d)).stdout.strip() == EMPTY_DIR_VECTOR


def test_pack_missing_path_is_empty_ware(repeatr: Repeatr, tmp_path: Path) -> None:
    assert repeatr("pack", str(tmp_path / "nope")).stdout.strip() == "tar:-"


def test_pack_to_warehouse_then_unpack_and_scan(repeatr: Repeatr, tmp_path: Path) -> None:
    d = _vector_dir(tmp_path)
    res = repeatr("pack", str(d), "--target", "ca+file://./wh/")
    assert res.code == Category.WAREHOUSE_UNWRITABLE  # a warehouse is not created by accident
    (tmp_path / "wh").mkdir()
    res = repeatr("pack", str(d), "--target", "ca+file://./wh/", "--format", "json")
    assert res.code == 0, res.stderr
    result = [e for e in res.events() if e["event"] == "result"]
    assert result == [{"event": "result", "ware": EMPTY_DIR_VECTOR}]
    h = EMPTY_DIR_VECTOR.split(":", 1)[1]
    stored = tmp_path / "wh" / h[:3] / h[3:6] / h
    assert stored.is_file()
    assert repeatr("scan", str(stored)).stdout.strip() == EMPTY_DIR_VECTOR
    res = repeatr(
        "unpack", EMPTY_DIR_VECTOR, "out", "--source", "ca+file://./wh/", "--filter", "lossless"
    )
    assert res.code == 0, res.stderr
    assert (tmp_path / "out" / "bar").stat().st_uid == 1000


def test_unpack_published_fixture_reports_filtered_id(repeatr: Repeatr, tmp_path: Path) -> None:
    src = f"file://{FIXTURES}/tar_withBase.tgz"
    lossless = repeatr("unpack", WITH_BASE, "a", "--source", src, "--filter", "lossless")
    assert lossless.code == 0, lossless.stderr
    assert lossless.stdout.strip() == WITH_BASE
    lowpriv = repeatr("unpack", WITH_BASE, "b", "--source", src, "--filter", "mtime=@0")
    assert lowpriv.code == 0, lowpriv.stderr
    assert lowpriv.stdout.strip() not in ("", WITH_BASE)  # post-filter hash differs


def test_unpack_hash_mismatch_leaves_nothing(repeatr: Repeatr, tmp_path: Path) -> None:
    res = repeatr("unpack", SANS_BASE, "out", "--source", f"file://{FIXTURES}/tar_withBase.tgz")
    assert res.code == Category.HASH_MISMATCH
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unpack_sources_in_order_and_not_found(repeatr: Repeatr, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = repeatr("unpack", WITH_BASE, "out", "--source", "ca+file://./empty/")
    assert res.code == Category.WARE_NOT_FOUND
    res = repeatr("unpack", WITH_BASE, "out", "--source", "ca+file://./nowhere/")
    assert res.code == Category.WAREHOUSE_UNAVAILABLE
    res = repeatr(
        "unpack", WITH_BASE, "out",
        "--source", "ca+file://./empty/",
        "--source", f"file://{FIXTURES}/tar_withBase.tgz",
    )
    assert res.code == 0, res.stderr
    assert (tmp_path / "out" / "ab").is_file()


def test_unpack_refuses_non_empty_destination(repeatr: Repeatr, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep").write_text("mine")
    res = repeatr("unpack", WITH_BASE, "out", "--source", f"file://{FIXTURES}/tar_withBase.tgz")
    assert res.code == Category.INOPERABLE_PATH
    assert (tmp_path / "out" / "keep").read_text() == "mine"


def test_mirror_verifies_and_is_idempotent(repeatr: Repeatr, tmp_path: Path) -> None:
    src = f"file://{FIXTURES}/tar_withBase.tgz"
    (tmp_path / "wh").mkdir()
    first = repeatr("mirror", WITH_BASE, "--source", src, "--target", "ca+file://./wh/")
    assert first.code == 0, first.stderr
    again = repeatr("mirror", WITH_BASE, "--source", src, "--target", "ca+file://./wh/")
    assert again.code == 0 and "already" in again.stderr
    bad = repeatr("mirror", SANS_BASE, "--source", src, "--target", "ca+file://./wh/")
    assert bad.code == Category.HASH_MISMATCH
    h = SANS_BASE.split(":", 1)[1]
    assert not (tmp_path / "wh" / h[:3] / h[3:6] / h).exists()
    assert not [p for p in (tmp_path / "wh").iterdir() if p.name.startswith(".tmp")]


def test_formula_id_hello_vector(repeatr: Repeatr, tmp_path: Path) -> None:
    # compat.md quotes the argv as "hello world"; the published ID is that of the
    # original's examples/hello.formula, whose argv is "hello world!".
    (tmp_path / "hello.json").write_text(
        '{"formula": {"inputs": {"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"},'
        ' "action": {"exec": ["/bin/echo", "hello world!"]},},}'
    )
    res = repeatr("formula", "id", "hello.json")
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == "AteQchZcX1WATj4rnwsmDf4Gqhe6To4CWLj4j8Ghdjd3Ab4DJ7Abk2tuBfG96jruT"


def test_formula_errors_name_file_and_field(repeatr: Repeatr, tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        '{"formula": {"action": {"exec": ["/bin/true"], "userinfo": {"uid": "x"}}}}'
    )
    res = repeatr("formula", "id", "bad.json")
    assert res.code == Category.USAGE
    assert "bad.json" in res.stderr and "formula.action.userinfo.uid" in res.stderr


def test_usage_errors_exit_1_and_json_errors(repeatr: Repeatr) -> None:
    assert repeatr("unpack", "nonsense", "out", "--source", "file://x").code == Category.USAGE
    assert repeatr("frobnicate").code == Category.USAGE
    res = repeatr("scan", "/nonexistent.tgz", "--format", "json")
    assert res.code != 0
    (event,) = res.events()
    assert event["event"] == "error" and event["exitCode"] == res.code


def test_help_teaches(repeatr: Repeatr) -> None:
    res = repeatr("--help")
    assert res.code == 0
    for word in ("pack", "unpack", "scan", "mirror", "formula", "cache", "exit codes"):
        assert word in res.stdout
    res = repeatr("unpack", "--help")
    assert "low-priv" in res.stdout and "--source" in res.stdout


def test_format_ansi_is_the_originals_name_for_text(repeatr: Repeatr) -> None:
    fixture = str(FIXTURES / "tar_withBase.tgz")
    for spelling in (["--format=ansi"], ["--format", "ansi"], ["--format=dumb"]):
        res = repeatr("scan", fixture, *spelling)
        assert res.code == 0, res.stderr
        assert res.stdout == WITH_BASE + "\n"
    assert repeatr("--format=ansi", "scan", fixture).stdout == WITH_BASE + "\n"
    assert repeatr("scan", fixture, "--format=fancy").code == Category.USAGE


def test_formula_id_normalises_filters_and_warns_on_unknown_keys(
    repeatr: Repeatr, tmp_path: Path
) -> None:
    def formula(filters: str) -> str:
        return (
            '{"formula": {"inputs": {"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6"},'
            ' "action": {"exec": ["/bin/true"]},'
            f' "outputs": {{"/out": {{"packtype": "tar", "filters": {filters}}}}}}}}}'
        )

    (tmp_path / "canonical.json").write_text(formula('{"uid": "1000", "mtime": "@1262304000"}'))
    (tmp_path / "written.json").write_text(
        formula('{"mtime": "2010-01-01T00:00:00Z", "uid": "01000", "colour": "blue"}')
    )
    canonical = repeatr("formula", "id", "canonical.json")
    written = repeatr("formula", "id", "written.json")
    assert canonical.code == 0 and written.code == 0, written.stderr
    assert written.stdout == canonical.stdout
    assert "'colour'" in written.stderr and "warning" not in canonical.stderr
    assert canonical.stderr == ""


def test_single_file_pack_unpack_scan(repeatr: Repeatr, tmp_path: Path) -> None:
    src = tmp_path / "hello.txt"
    src.write_text("hi\n")
    (tmp_path / "wh").mkdir()
    packed = repeatr("pack", str(src), "--target", "ca+file://./wh/")
    assert packed.code == 0, packed.stderr
    ware = packed.stdout.strip()
    h = ware.split(":", 1)[1]
    assert repeatr("scan", str(tmp_path / "wh" / h[:3] / h[3:6] / h)).stdout.strip() == ware
    res = repeatr("unpack", ware, "got.txt", "--source", "ca+file://./wh/")
    assert res.code == 0, res.stderr
    assert (tmp_path / "got.txt").read_text() == "hi\n"
    assert (tmp_path / "got.txt").is_file()


def test_formula_id_of_a_formula_with_git_and_zip_inputs(repeatr: Repeatr, tmp_path: Path) -> None:
    # Parsing used to reject git: inputs, so even `formula id` failed.
    (tmp_path / "f.json").write_text(
        '{"formula": {"inputs": {"/": "tar:6q7G4hWr283FpTa5Lf8heVqw9t97b5VoMU6AGszuBYAz9EzQdeHVFAou7c4W9vFcQ6",'
        ' "/src": "git:0123456789abcdef0123456789abcdef01234567"},'
        ' "action": {"exec": ["/bin/true"]}}}'
    )
    res = repeatr("formula", "id", "f.json")
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == "3ipNXU2bNPj836UWmzFaA4vdkVyn7z6XYLhYrLYibpR95zmnJEKfeHnn6tJ9DX9AZ2"
    (tmp_path / "bad.json").write_text(
        '{"formula": {"inputs": {"/src": "git:abc"}, "action": {"exec": ["/bin/true"]}}}'
    )
    bad = repeatr("formula", "id", "bad.json")
    assert bad.code == Category.USAGE and 'formula.inputs["/src"]' in bad.stderr


def test_zip_scan_and_unpack(repeatr: Repeatr, tmp_path: Path) -> None:
    fixture = FIXTURES / "zip_withbase.zip"
    res = repeatr("scan", str(fixture), "--packtype", "zip")
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == ZIP_WITH_BASE
    res = repeatr("unpack", ZIP_WITH_BASE, "out", "--source", f"file://{fixture}", "--filter", "lossless")
    assert res.code == 0, res.stderr
    assert res.stdout.strip() == ZIP_WITH_BASE
    assert (tmp_path / "out").is_dir()
    assert repeatr("pack", str(tmp_path / "out"), "--packtype", "zip").code == Category.USAGE
