"""URL forms: which kind each scheme picks and where a URL points (rio kvfs/kvhttp rules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.model.wareid import WareID
from repeatr.warehouse import ca_segments, redact, warehouse_for
from repeatr.warehouse.cafile import CAFileWarehouse
from repeatr.warehouse.file import FileWarehouse
from repeatr.warehouse.http import HTTPWarehouse

from .conftest import WITH_BASE

H = WITH_BASE.hash


@pytest.mark.parametrize(
    ("url", "kind", "ca"),
    [
        ("file:///x.tgz", FileWarehouse, False),
        ("ca+file:///wh/", CAFileWarehouse, True),
        ("http://127.0.0.1/x.tgz", HTTPWarehouse, False),
        ("https://127.0.0.1/x.tgz", HTTPWarehouse, False),
        ("ca+http://127.0.0.1/wh/", HTTPWarehouse, True),
        ("ca+https://127.0.0.1/wh/", HTTPWarehouse, True),
    ],
)
def test_scheme_picks_kind(url: str, kind: type, ca: bool) -> None:
    wh = warehouse_for(url)
    assert type(wh) is kind
    assert wh.content_addressed is ca
    assert wh.url == url


@pytest.mark.parametrize(
    "url", ["s3://bucket/x", "git://host/repo", "/plain/path", "x.tgz", "file://", "ca+file://",
            "http:///nohost", "http://[::1"]
)
def test_bad_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(RepeatrError) as err:
        warehouse_for(url)
    assert err.value.category is Category.USAGE


def test_unknown_scheme_names_url_and_schemes() -> None:
    with pytest.raises(RepeatrError) as err:
        warehouse_for("s3://bucket/x")
    assert "s3://bucket/x" in str(err.value)
    assert "ca+file://" in str(err.value)


@pytest.mark.parametrize(
    ("url", "rel"),
    [
        ("file://./x.tgz", "x.tgz"),
        ("file://x.tgz", "x.tgz"),
        ("file://dir/x.tgz", "dir/x.tgz"),
        ("file://./dir/x.tgz/", "dir/x.tgz"),
        ("file://../up.tgz", "../up.tgz"),
        ("file://./sp%20ace.tgz", "sp ace.tgz"),
        ("file://./x.tgz?q=1#frag", "x.tgz"),
    ],
)
def test_file_paths_are_relative_to_cwd(
    url: str, rel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    wh = warehouse_for(url)
    assert isinstance(wh, FileWarehouse)
    assert wh.path == (work / rel).resolve()


def test_absolute_file_path() -> None:
    wh = warehouse_for("file:///srv/wares/x.tgz")
    assert isinstance(wh, FileWarehouse)
    assert wh.path == Path("/srv/wares/x.tgz")


def test_ca_file_base_trailing_slash_optional(tmp_path: Path) -> None:
    a = warehouse_for(f"ca+file://{tmp_path}/wh/")
    b = warehouse_for(f"ca+file://{tmp_path}/wh")
    assert isinstance(a, CAFileWarehouse) and isinstance(b, CAFileWarehouse)
    assert a.ware_path(WITH_BASE) == b.ware_path(WITH_BASE) == tmp_path / "wh" / H[:3] / H[3:6] / H


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ca+http://127.0.0.1:8/wh/", f"http://127.0.0.1:8/wh/{H[:3]}/{H[3:6]}/{H}"),
        ("ca+http://127.0.0.1:8/wh", f"http://127.0.0.1:8/wh/{H[:3]}/{H[3:6]}/{H}"),
        ("ca+https://127.0.0.1:8", f"https://127.0.0.1:8/{H[:3]}/{H[3:6]}/{H}"),
        ("ca+https://127.0.0.1:8//a/./b/", f"https://127.0.0.1:8/a/b/{H[:3]}/{H[3:6]}/{H}"),
        ("ca+http://127.0.0.1:8/wh/?t=1", f"http://127.0.0.1:8/wh/{H[:3]}/{H[3:6]}/{H}?t=1"),
        ("http://127.0.0.1:8/x.tgz?t=1", "http://127.0.0.1:8/x.tgz?t=1"),
    ],
)
def test_http_ware_urls(url: str, expected: str) -> None:
    wh = warehouse_for(url)
    assert isinstance(wh, HTTPWarehouse)
    assert wh.ware_url(WITH_BASE) == expected


def test_ca_segments_refuse_empty_and_non_base58() -> None:
    assert ca_segments(WITH_BASE) == (H[:3], H[3:6], H)
    for bad in (WareID("tar", "-"), WareID("tar", "../../../../etc/passwd"), WareID("tar", "ab")):
        with pytest.raises(RepeatrError) as err:
            ca_segments(bad)
        assert err.value.category is Category.USAGE


def test_redact_hides_passwords() -> None:
    assert redact("https://u:secret@127.0.0.1/x") == "https://u:***@127.0.0.1/x"
    assert redact("https://127.0.0.1/x") == "https://127.0.0.1/x"
