"""Importing ``docker export`` tars: one plain tar of a root filesystem."""

from __future__ import annotations

import gzip
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.fileset.entry import EntryType
from repeatr.fileset.pack import pack_dir
from repeatr.imports import flatten, import_source
from repeatr.model.filters import Filters

from .images import listing, make_rootfs, member, set_times, tar_layer

pytestmark = pytest.mark.root


def gnu_tar(src: Path, dest: Path) -> Path:
    """What `docker export` gives: a plain tar of the whole root filesystem."""
    subprocess.run(
        ["tar", "-C", os.fspath(src), "--numeric-owner", "-cf", os.fspath(dest), "."],
        check=True,
        capture_output=True,
    )
    return dest


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    make_rootfs(root)
    os.link(root / "bin/busybox", root / "bin/busybox.hard")  # GNU tar stores a hardlink
    (root / ".wh.not-a-whiteout").write_bytes(b"a real file\n")  # no layers to hide
    os.mkfifo(root / "tmp/fifo", 0o600)
    set_times(root)
    return root


def test_export_imports_to_the_id_of_the_directory(rootfs: Path, tmp_path: Path) -> None:
    export = gnu_tar(rootfs, tmp_path / "export.tar")
    with tarfile.open(export) as tar:
        kinds = {m.name: m.type for m in tar.getmembers()}
    assert kinds["./bin/busybox.hard"] == tarfile.LNKTYPE  # the tar really has a hardlink

    work = tmp_path / "work"
    work.mkdir()
    ware = import_source(os.fspath(export), workdir=work)
    assert ware == pack_dir(rootfs, None, filters=Filters())
    assert os.listdir(work) == []

    # Same through a stream, and gzip'd.
    with open(export, "rb") as stream:
        assert import_source(stream, workdir=work) == ware
    (tmp_path / "export.tgz").write_bytes(gzip.compress(export.read_bytes()))
    assert import_source(os.fspath(tmp_path / "export.tgz"), workdir=work) == ware


def test_hardlinks_become_copies(rootfs: Path, tmp_path: Path) -> None:
    export = gnu_tar(rootfs, tmp_path / "export.tar")
    with flatten(os.fspath(export), workdir=tmp_path) as flat:
        got = listing(flat.root)  # asserts every file has one link
        a = os.lstat(flat.root / "bin/busybox")
        b = os.lstat(flat.root / "bin/busybox.hard")
    assert a.st_ino != b.st_ino
    assert got["bin/busybox.hard"] == got["bin/busybox"]
    assert got[".wh.not-a-whiteout"][5] == b"a real file\n"
    assert got["tmp/fifo"][0] is EntryType.FIFO
    assert got == listing(rootfs, hardlinks=True)


def test_hardlink_to_a_later_member_is_rejected(tmp_path: Path) -> None:
    export = tmp_path / "export.tar"
    export.write_bytes(
        tar_layer([
            (member("b", tarfile.LNKTYPE, link="a"), None),
            (member("a"), b"content\n"),
        ])
    )
    with pytest.raises(RepeatrError) as err:
        import_source(os.fspath(export), workdir=tmp_path)
    assert err.value.category is Category.WARE_CORRUPT


def test_device_nodes_are_kept_as_root_or_dropped_by_filter(tmp_path: Path) -> None:
    export = tmp_path / "export.tar"
    null = member("dev/null", tarfile.CHRTYPE, mode=0o666)
    null.devmajor, null.devminor = 1, 3
    export.write_bytes(tar_layer([(member("dev/", tarfile.DIRTYPE, mode=0o755), None),
                                  (null, None)]))
    with flatten(os.fspath(export), workdir=tmp_path) as flat:
        st = os.lstat(flat.root / "dev/null")
        assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1
        assert os.minor(st.st_rdev) == 3
    with flatten(os.fspath(export), filters=Filters(dev="ignore"), workdir=tmp_path) as flat:
        assert os.listdir(flat.root / "dev") == []
    with pytest.raises(RepeatrError) as err:
        import_source(os.fspath(export), filters=Filters(dev="reject"), workdir=tmp_path)
    assert err.value.category is Category.FILTER_REJECTION


def test_docker_save_archive_is_refused(tmp_path: Path) -> None:
    export = tmp_path / "save.tar"
    export.write_bytes(
        tar_layer([(member("manifest.json"), b"[]"), (member("repositories"), b"{}")])
    )
    with pytest.raises(RepeatrError) as err:
        import_source(os.fspath(export), workdir=tmp_path)
    assert err.value.category is Category.USAGE
    assert os.listdir(tmp_path) == ["save.tar"]


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError) as err:
        import_source(os.fspath(tmp_path / "nope.tar"), workdir=tmp_path)
    assert err.value.category is Category.USAGE
    assert os.listdir(tmp_path) == []
