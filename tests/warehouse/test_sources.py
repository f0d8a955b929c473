"""``open_from_sources``: order, moving on, and the final error's category."""

from __future__ import annotations

from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError, WarehouseError
from repeatr.warehouse import open_from_sources, open_single_ware

from .conftest import WITH_BASE, Served, Wares


def test_first_unavailable_second_has_it(refused_url: str, wares: Wares) -> None:
    good = f"file://{wares.with_base}"
    with open_from_sources(WITH_BASE, [refused_url + "/w.tgz", good]) as (url, stream):
        assert url == good
        assert stream.read() == wares.with_base.read_bytes()


def test_first_not_found_second_has_it(tmp_path: Path, wares: Wares, http_root: Served) -> None:
    (http_root.root / "w.tgz").write_bytes(wares.with_base.read_bytes())
    good = f"{http_root.url}/w.tgz"
    with open_from_sources(WITH_BASE, [f"ca+file://{tmp_path}", good]) as (url, stream):
        assert url == good
        assert stream.read() == wares.with_base.read_bytes()


def test_first_that_has_it_wins(wares: Wares) -> None:
    first, second = f"file://{wares.with_base}", f"file://{wares.sans_base}"
    with open_from_sources(WITH_BASE, [first, second]) as (url, _):
        assert url == first


def test_all_not_found(tmp_path: Path, http_root: Served) -> None:
    urls = [f"file://{tmp_path}/a.tgz", f"ca+file://{tmp_path}", f"{http_root.url}/a.tgz"]
    with pytest.raises(RepeatrError) as err, open_from_sources(WITH_BASE, urls):
        pass
    assert err.value.category is Category.WARE_NOT_FOUND
    for url in urls:
        assert url in str(err.value)


def test_unavailable_and_not_found_is_unavailable(tmp_path: Path, refused_url: str) -> None:
    urls = [f"file://{tmp_path}/a.tgz", refused_url + "/a.tgz"]
    with pytest.raises(RepeatrError) as err, open_from_sources(WITH_BASE, urls):
        pass
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE
    for url in urls:
        assert url in str(err.value)


def test_no_sources_is_usage() -> None:
    with pytest.raises(RepeatrError) as err, open_from_sources(WITH_BASE, []):
        pass
    assert err.value.category is Category.USAGE
    assert str(WITH_BASE) in str(err.value)


def test_bad_url_anywhere_fails_before_fetching(wares: Wares) -> None:
    urls = [f"file://{wares.with_base}", "s3://bucket/x"]
    with pytest.raises(RepeatrError) as err, open_from_sources(WITH_BASE, urls):
        pass
    assert err.value.category is Category.USAGE


def test_error_in_the_body_is_not_a_reason_to_move_on(wares: Wares) -> None:
    urls = [f"file://{wares.with_base}", f"file://{wares.sans_base}"]
    seen: list[str] = []
    boom = WarehouseError("from the body", category=Category.WARE_NOT_FOUND)
    with pytest.raises(WarehouseError) as err, open_from_sources(WITH_BASE, urls) as (url, stream):
        seen.append(url)
        raise boom
    assert err.value is boom
    assert seen == [urls[0]]
    assert stream.closed


def test_open_single_ware(wares: Wares, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(wares.with_base.parent)
    for source in ("tar_withBase.tgz", str(wares.with_base), f"file://{wares.with_base}"):
        with open_single_ware(source) as stream:
            assert stream.read() == wares.with_base.read_bytes()
    with pytest.raises(RepeatrError) as err, open_single_ware("missing.tgz"):
        pass
    assert err.value.category is Category.WARE_NOT_FOUND
    with pytest.raises(RepeatrError) as err, open_single_ware(f"ca+file://{tmp_path}"):
        pass
    assert err.value.category is Category.USAGE
