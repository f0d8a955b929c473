"""Saving to ``http(s)://`` and ``ca+http(s)://`` warehouses, against a real nginx on 127.0.0.1.

The locations of the test server (see ``nginx.py``): ``/dav/`` has full
WebDAV writes, ``/nomove/`` only PUT and DELETE, ``/mkcol/`` no
``create_full_put_path``, ``/denymove/`` forbids MOVE, ``/auth/`` needs
Basic auth, ``/ro/`` is static only.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.fileset.pack import pack_dir, scan_stream
from repeatr.model.filters import PACK_CONSERVATIVE
from repeatr.model.wareid import WareID
from repeatr.warehouse import open_from_sources, open_single_ware, warehouse_for
from repeatr.warehouse.httpwrite import TEMP_MARK, temp_url

from .conftest import WITH_BASE, Wares, ca_path, files_under
from .nginx import PASSWORD, USER, Nginx, start_nginx

LOCATIONS = ("dav", "nomove", "mkcol", "denymove", "auth", "public", "ro")


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    for name in LOCATIONS:
        (root / name).mkdir(parents=True)
    return root


@pytest.fixture
def nginx(tmp_path: Path, www: Path) -> Iterator[Nginx]:
    server = start_nginx(tmp_path / "nginx", www)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small directory to pack: files, a subdirectory, a symlink, an empty file."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_text("hello\n")
    (root / "sub" / "data.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "empty").touch()
    (root / "link").symlink_to("hello.txt")
    return root


def packed(tree: Path) -> tuple[WareID, bytes]:
    """The ware ID and bytes packing ``tree`` gives (packing is deterministic)."""
    buf = io.BytesIO()
    ware = pack_dir(tree, buf, filters=PACK_CONSERVATIVE)
    return ware, buf.getvalue()


def save(url: str, tree: Path) -> WareID:
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(tree, session.file, filters=PACK_CONSERVATIVE)
        session.commit(ware)
    return ware


def save_error(url: str, tree: Path) -> RepeatrError:
    with pytest.raises(RepeatrError) as err:
        save(url, tree)
    return err.value


def fetch(ware: WareID, url: str) -> bytes:
    with open_from_sources(ware, [url]) as (_, stream):
        return stream.read()


def temps(root: Path) -> list[str]:
    return [p for p in files_under(root) if TEMP_MARK in p]


def log_until(server: Nginx, done: Callable[[list[str]], bool]) -> list[str]:
    """The access log once ``done(lines)`` holds (nginx logs a request just after answering)."""
    deadline = time.monotonic() + 5
    lines = server.access_log()
    while not done(lines) and time.monotonic() < deadline:
        time.sleep(0.02)
        lines = server.access_log()
    return lines


def has(*needles: str) -> Callable[[list[str]], bool]:
    return lambda lines: all(any(n in line for line in lines) for n in needles)


# --- round trips ------------------------------------------------------------


def test_ca_http_round_trip(nginx: Nginx, www: Path, tree: Path) -> None:
    url = f"ca+{nginx.url}/dav/wh/"
    ware = save(url, tree)
    expected_ware, expected = packed(tree)
    assert ware == expected_ware
    # The rio layout on the server's disk, nothing else beside it.
    on_disk = ca_path(www / "dav" / "wh", ware)
    assert on_disk.read_bytes() == expected
    assert files_under(www / "dav") == [
        "wh", f"wh/{ware.hash[:3]}", f"wh/{ware.hash[:3]}/{ware.hash[3:6]}",
        f"wh/{ware.hash[:3]}/{ware.hash[3:6]}/{ware.hash}",
    ]
    # Fetched back over HTTP: the same bytes, the same tree hash.
    data = fetch(ware, url)
    assert data == expected
    assert scan_stream(io.BytesIO(data)) == ware
    # Uploaded under a temp name and moved: the final name was never PUT to.
    final = f"/dav/wh/{ware.hash[:3]}/{ware.hash[3:6]}/{ware.hash}"
    lines = log_until(nginx, has("MOVE "))
    puts = [line for line in lines if line.startswith("PUT ")]
    assert len(puts) == 1 and TEMP_MARK in puts[0] and puts[0].endswith(" 201")
    assert any(line.startswith("MOVE ") and line.endswith(" 204") for line in lines)
    assert not any(line.startswith(f"PUT {final} ") for line in lines)


def test_ca_http_existing_ware_is_not_uploaded_again(nginx: Nginx, www: Path, tree: Path) -> None:
    url = f"ca+{nginx.url}/dav/wh"
    ware = save(url, tree)
    log_until(nginx, has("MOVE "))
    before = len(nginx.access_log())
    assert save(url, tree) == ware
    lines = log_until(nginx, lambda lines: any(x.startswith("HEAD ") for x in lines[before:]))
    new = [line.split()[0] for line in lines[before:]]
    assert "HEAD" in new and "PUT" not in new and "MOVE" not in new
    assert temps(www) == []


def test_single_ware_url_round_trip_and_overwrite(nginx: Nginx, www: Path, tree: Path) -> None:
    url = f"{nginx.url}/dav/out/ware.tgz"
    first = save(url, tree)
    (tree / "hello.txt").write_text("changed\n")
    second = save(url, tree)
    assert first != second
    # Overwrite: T replaced the file; the URL now holds the second ware.
    assert (www / "dav" / "out" / "ware.tgz").read_bytes() == packed(tree)[1]
    with open_single_ware(url) as stream:
        assert scan_stream(stream) == second
    assert files_under(www / "dav" / "out") == ["ware.tgz"]


def test_mirror_from_file_reads_back_identically(nginx: Nginx, www: Path, wares: Wares) -> None:
    from repeatr.warehouse.mirror import mirror

    url = f"ca+{nginx.url}/dav/wh/"
    result = mirror(WITH_BASE, [f"file://{wares.with_base}"], url)
    assert result and result.bytes == wares.with_base.stat().st_size
    assert ca_path(www / "dav" / "wh", WITH_BASE).read_bytes() == wares.with_base.read_bytes()
    assert not mirror(WITH_BASE, [f"file://{wares.with_base}"], url)  # already there


# --- servers that lack something -------------------------------------------


def test_without_move_falls_back_to_put(nginx: Nginx, www: Path, tree: Path) -> None:
    url = f"ca+{nginx.url}/nomove/wh/"
    ware = save(url, tree)
    final = f"/nomove/wh/{ware.hash[:3]}/{ware.hash[3:6]}/{ware.hash}"
    assert ca_path(www / "nomove" / "wh", ware).read_bytes() == packed(tree)[1]
    assert temps(www) == []
    lines = log_until(nginx, has("DELETE "))
    assert any(x.startswith("MOVE ") and x.endswith(" 405") for x in lines)
    assert f"PUT {final} 201" in lines
    assert any(x.startswith("DELETE ") and TEMP_MARK in x and x.endswith(" 204") for x in lines)
    assert fetch(ware, url) == packed(tree)[1]


def test_without_move_single_ware_url(nginx: Nginx, www: Path, tree: Path) -> None:
    save(f"{nginx.url}/nomove/w.tgz", tree)
    assert (www / "nomove" / "w.tgz").read_bytes() == packed(tree)[1]
    assert temps(www) == []


def test_mkcol_creates_shards_when_put_does_not(nginx: Nginx, www: Path, tree: Path) -> None:
    (www / "mkcol" / "wh").mkdir()
    url = f"ca+{nginx.url}/mkcol/wh/"
    ware = save(url, tree)
    assert ca_path(www / "mkcol" / "wh", ware).read_bytes() == packed(tree)[1]
    assert temps(www) == []
    lines = log_until(nginx, has("MOVE "))
    assert [x for x in lines if x.startswith("MKCOL ")] == [
        f"MKCOL /mkcol/wh/{ware.hash[:3]}/ 201",
        f"MKCOL /mkcol/wh/{ware.hash[:3]}/{ware.hash[3:6]}/ 201",
    ]
    # A second ware in the same warehouse: its own shard dirs, made the same way.
    (tree / "more").write_text("more\n")
    other = save(url, tree)
    assert ca_path(www / "mkcol" / "wh", other).is_file()


def test_missing_base_collection_is_not_created(nginx: Nginx, www: Path, tree: Path) -> None:
    err = save_error(f"ca+{nginx.url}/mkcol/missing/", tree)
    assert err.category is Category.WAREHOUSE_UNWRITABLE
    assert files_under(www / "mkcol") == []


def test_failed_move_deletes_the_temp_upload(nginx: Nginx, www: Path, tree: Path) -> None:
    err = save_error(f"ca+{nginx.url}/denymove/wh/", tree)
    assert err.category is Category.WAREHOUSE_UNWRITABLE
    assert "MOVE" in str(err) and "403" in str(err)
    lines = log_until(nginx, has("DELETE "))
    assert any(x.startswith("PUT ") and TEMP_MARK in x and x.endswith(" 201") for x in lines)
    assert any(x.startswith("DELETE ") and TEMP_MARK in x and x.endswith(" 204") for x in lines)
    # The shard directories PUT created may stay; no ware file, no temp file.
    assert all((www / "denymove" / p).is_dir() for p in files_under(www / "denymove"))


def test_abort_uploads_nothing_and_closes_the_spool(nginx: Nginx, www: Path, tree: Path) -> None:
    wh = warehouse_for(f"ca+{nginx.url}/dav/wh/")
    with pytest.raises(ZeroDivisionError), wh.start_save() as s:
        pack_dir(tree, s.file, filters=PACK_CONSERVATIVE)
        spool = s.file
        1 / 0  # noqa: B018
    assert spool.closed
    assert files_under(www / "dav") == []
    assert [x.split()[0] for x in log_until(nginx, has("OPTIONS "))] == ["OPTIONS"]


def test_read_only_location_is_unwritable(nginx: Nginx, www: Path, tree: Path) -> None:
    url = f"ca+{nginx.url}/ro/wh/"
    err = save_error(url, tree)
    assert err.category is Category.WAREHOUSE_UNWRITABLE
    assert f"{nginx.url}/ro/wh/" in str(err) and "405" in str(err)
    assert files_under(www / "ro") == []
    single = save_error(f"{nginx.url}/ro/w.tgz", tree)
    assert single.category is Category.WAREHOUSE_UNWRITABLE


@pytest.mark.parametrize("kind", ["ca+", ""])
def test_refused_port_is_unwritable(refused_url: str, tree: Path, kind: str) -> None:
    url = f"{kind}{refused_url}/wh/" if kind else f"{refused_url}/w.tgz"
    # Fails at start_save, before anything is packed.
    with pytest.raises(RepeatrError) as err, warehouse_for(url).start_save():
        pytest.fail("start_save should not succeed")
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE
    assert refused_url in str(err.value) and "refused" in str(err.value).lower()


def test_server_gone_before_commit_is_unwritable(nginx: Nginx, tree: Path) -> None:
    url = f"ca+{nginx.url}/dav/wh/"
    with pytest.raises(RepeatrError) as err, warehouse_for(url).start_save() as session:
        ware = pack_dir(tree, session.file, filters=PACK_CONSERVATIVE)
        nginx.stop()
        session.commit(ware)
    assert err.value.category is Category.WAREHOUSE_UNWRITABLE
    assert nginx.url in str(err.value)


def test_directory_url_is_a_usage_error(nginx: Nginx) -> None:
    with pytest.raises(RepeatrError) as err, warehouse_for(f"{nginx.url}/dav/").start_save():
        pass
    assert err.value.category is Category.USAGE


# --- credentials ------------------------------------------------------------


def test_credentials_in_url_are_sent_as_basic_auth(nginx: Nginx, www: Path, tree: Path) -> None:
    port = nginx.port
    url = f"ca+http://{USER}:{PASSWORD}@127.0.0.1:{port}/auth/wh/"
    ware = save(url, tree)
    assert ca_path(www / "auth" / "wh", ware).is_file()
    assert fetch(ware, url) == packed(tree)[1]  # reading sends them too


@pytest.mark.parametrize("userinfo", [f"{USER}:wrong-password@", ""])
def test_bad_or_missing_credentials_are_unwritable(
    nginx: Nginx, www: Path, tree: Path, userinfo: str
) -> None:
    url = f"ca+http://{userinfo}127.0.0.1:{nginx.port}/auth/wh/"
    err = save_error(url, tree)
    assert err.category is Category.WAREHOUSE_UNWRITABLE
    assert "authorization failed" in str(err) and "401" in str(err)
    assert "wrong-password" not in str(err)
    assert files_under(www / "auth") == []


def test_documented_nginx_config_reads_openly_and_writes_with_a_login(
    nginx: Nginx, www: Path, tree: Path
) -> None:
    anonymous = f"ca+{nginx.url}/public/wh/"
    assert save_error(anonymous, tree).category is Category.WAREHOUSE_UNWRITABLE
    ware = save(f"ca+http://{USER}:{PASSWORD}@127.0.0.1:{nginx.port}/public/wh/", tree)
    assert fetch(ware, anonymous) == packed(tree)[1]
    assert temps(www) == []


# --- the command line --------------------------------------------------------


def repeatr(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "repeatr", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"REPEATR_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )


def test_cli_pack_to_ca_http(nginx: Nginx, www: Path, tree: Path, tmp_path: Path) -> None:
    url = f"ca+{nginx.url}/dav/wh/"
    proc = repeatr(tmp_path, "pack", str(tree), "--target", url)
    assert proc.returncode == 0, proc.stderr
    ware = WareID.parse(proc.stdout.strip())
    assert ware == packed(tree)[0]
    assert scan_stream(io.BytesIO(fetch(ware, url))) == ware
    assert temps(www) == []


def test_cli_mirror_file_to_ca_http(nginx: Nginx, www: Path, wares: Wares, tmp_path: Path) -> None:
    url = f"ca+{nginx.url}/dav/wh/"
    proc = repeatr(
        tmp_path, "mirror", str(WITH_BASE), "--source", f"file://{wares.with_base}", "--target", url
    )
    assert proc.returncode == 0, proc.stderr
    assert ca_path(www / "dav" / "wh", WITH_BASE).read_bytes() == wares.with_base.read_bytes()
    assert fetch(WITH_BASE, url) == wares.with_base.read_bytes()


def test_cli_pack_to_refused_port_exits_4(refused_url: str, tree: Path, tmp_path: Path) -> None:
    proc = repeatr(tmp_path, "pack", str(tree), "--target", f"ca+{refused_url}/wh/")
    assert proc.returncode == int(Category.WAREHOUSE_UNWRITABLE), proc.stderr


# --- names ------------------------------------------------------------------------


def test_temp_name_is_a_hidden_sibling_keeping_the_query() -> None:
    name = temp_url("http://127.0.0.1:1/wh/abc/def/abcdefgh?t=1")
    assert name.startswith("http://127.0.0.1:1/wh/abc/def/.abcdefgh.tmp-")
    assert name.endswith("?t=1")
    assert temp_url("http://127.0.0.1:1/x.tgz") != temp_url("http://127.0.0.1:1/x.tgz")
