"""``http(s)://`` and ``ca+http(s)://`` against a real server on 127.0.0.1."""

from __future__ import annotations

import shutil

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.warehouse import warehouse_for
from repeatr.warehouse.http import HTTPWarehouse

from .conftest import SANS_BASE, WITH_BASE, Served, Wares, ca_path


def _open_error(url: str) -> RepeatrError:
    with pytest.raises(RepeatrError) as err, warehouse_for(url).open_ware(WITH_BASE):
        pass
    return err.value


def test_single_ware_url(http_root: Served, wares: Wares) -> None:
    shutil.copyfile(wares.with_base, http_root.root / "w.tgz")
    with warehouse_for(f"{http_root.url}/w.tgz").open_ware(WITH_BASE) as stream:
        assert stream.read() == wares.with_base.read_bytes()


def test_ca_layout(http_root: Served, wares: Wares) -> None:
    dest = ca_path(http_root.root / "wh", SANS_BASE)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(wares.sans_base, dest)
    url = "ca+" + http_root.url + "/wh/"
    with warehouse_for(url).open_ware(SANS_BASE) as stream:
        assert stream.read() == wares.sans_base.read_bytes()
    # The same warehouse lacks the other ware: the server answered 404.
    with pytest.raises(RepeatrError) as err, warehouse_for(url).open_ware(WITH_BASE):
        pass
    assert err.value.category is Category.WARE_NOT_FOUND


@pytest.mark.parametrize("code", [404, 410])
def test_not_found_codes(http_root: Served, code: int) -> None:
    assert _open_error(f"{http_root.url}/status/{code}").category is Category.WARE_NOT_FOUND


def test_missing_file_404(http_root: Served) -> None:
    assert _open_error(f"{http_root.url}/nope.tgz").category is Category.WARE_NOT_FOUND


@pytest.mark.parametrize("code", [500, 503, 403])
def test_other_codes_are_unavailable(http_root: Served, code: int) -> None:
    err = _open_error(f"{http_root.url}/status/{code}")
    assert err.category is Category.WAREHOUSE_UNAVAILABLE
    assert f"/status/{code}" in str(err) and str(code) in str(err)


def test_refused_port_is_unavailable(refused_url: str) -> None:
    err = _open_error(f"{refused_url}/w.tgz")
    assert err.category is Category.WAREHOUSE_UNAVAILABLE
    assert refused_url in str(err)
    assert "refused" in str(err).lower()


def test_silent_server_times_out_as_unavailable(silent_url: str) -> None:
    wh = HTTPWarehouse(silent_url, timeout=0.3)
    with pytest.raises(RepeatrError) as err, wh.open_ware(WITH_BASE):
        pass
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE
    assert silent_url in str(err.value)


def test_body_cut_short_is_unavailable(http_root: Served) -> None:
    with pytest.raises(RepeatrError) as err, warehouse_for(f"{http_root.url}/short").open_ware(
        WITH_BASE
    ) as stream:
        stream.read()
    assert err.value.category is Category.WAREHOUSE_UNAVAILABLE


