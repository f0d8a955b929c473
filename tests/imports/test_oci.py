"""Importing OCI layouts: flattening, whiteouts, tags, platforms, damaged blobs."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from repeatr.errors import Category, RepeatrError
from repeatr.fileset.entry import EntryType
from repeatr.fileset.pack import pack_dir
from repeatr.imports import flatten, import_source
from repeatr.model.filters import DEFAULT_MTIME, PACK_FLATTEN, Filters

from .conftest import PASSWD2
from .images import (
    MTIME,
    OCI_INDEX,
    REF_NAME,
    TAR_GZIP,
    blob_path,
    build,
    busybox_digest,
    hand_layout,
    layers_of,
    listing,
    make_rootfs,
    member,
    recompress_layer,
    set_times,
    tar_layer,
    umoci,
    write_json,
)

pytestmark = pytest.mark.root

D, F, L = EntryType.DIR, EntryType.FILE, EntryType.SYMLINK


def expected() -> dict[str, tuple[Any, ...]]:
    bb = busybox_digest()
    return {
        ".": (D, 0o755, 0, 0, MTIME, None),
        "bin": (D, 0o755, 0, 0, MTIME, None),
        "bin/busybox": (F, 0o755, 0, 0, MTIME, bb),
        "bin/busybox.hard": (F, 0o755, 0, 0, MTIME, bb),  # hardlink -> copy
        "bin/cat": (L, 0o777, 0, 0, MTIME, "busybox"),
        "bin/sh": (L, 0o777, 0, 0, MTIME, "busybox"),
        "bin/suid": (F, 0o4755, 0, 0, MTIME, b"#!/bin/sh\n"),
        "etc": (D, 0o755, 0, 0, MTIME, None),
        "etc/conf.d": (D, 0o750, 0, 0, MTIME, None),  # opaque: a.conf gone too
        "etc/conf.d/c.conf": (F, 0o644, 0, 0, MTIME, b"c=3\n"),
        "etc/hostname": (F, 0o644, 0, 0, MTIME, b"img\n"),
        "etc/motd": (L, 0o777, 0, 0, MTIME, "issue"),
        "etc/passwd": (F, 0o644, 0, 0, MTIME, PASSWD2),
        "home": (D, 0o755, 0, 0, MTIME, None),
        "home/reuser": (D, 0o700, 1000, 1000, MTIME, None),
        "opt": (D, 0o755, 0, 0, DEFAULT_MTIME, None),  # implied by opt/a
        "opt/a": (F, 0o644, 0, 0, MTIME, b"shared\n"),
        "opt/b": (F, 0o644, 0, 0, MTIME, b"shared\n"),
        "tmp": (D, 0o1777, 0, 0, MTIME, None),
        "usr": (D, 0o755, 0, 0, MTIME, None),
        "usr/bin": (D, 0o755, 0, 0, MTIME, None),
        "usr/bin/env": (L, 0o777, 0, 0, MTIME, "../../bin/busybox"),
        "var": (D, 0o755, 0, 0, MTIME, None),
        "var/old": (F, 0o644, 0, 0, MTIME, b"now a file\n"),
    }


def test_umoci_writes_whiteouts_but_no_opaque_marker(layered: Path) -> None:
    """The image really exercises what the tests claim: check its layers."""
    layers = layers_of(layered, "base")
    assert [lay["mediaType"].rpartition(".")[2] for lay in layers] == [
        "tar+gzip", "tar+gzip", "tar+zstd", "tar"
    ]
    with tarfile.open(blob_path(layered, layers[1]["digest"])) as tar:
        names = sorted(tar.getnames())
    assert "bin/.wh.ls" in names and "etc/conf.d/.wh.b.conf" in names
    assert "etc/passwd" in names and not any(".wh..wh..opq" in n for n in names)


def test_flattened_tree_is_exactly_the_merged_image(layered: Path, tmp_path: Path) -> None:
    with flatten("oci:" + os.fspath(layered) + ":base", workdir=tmp_path) as flat:
        assert flat.layers == 4
        got = listing(flat.root)
    assert got == expected()
    assert os.listdir(tmp_path) == []  # the temp dir is gone


def test_umoci_unpacks_the_same_tree(layered: Path, tmp_path: Path) -> None:
    """An independent flattener agrees (content, types, modes, owners)."""
    layout, _layers = _copy(layered, tmp_path)
    recompress_layer(layout, "base", 2, TAR_GZIP)  # umoci 0.4 reads no zstd
    umoci("unpack", "--image", f"{layout}:base", tmp_path / "bundle")
    theirs = listing(tmp_path / "bundle" / "rootfs", hardlinks=True)
    ours = expected()
    assert {k: v[:4] + v[5:] for k, v in theirs.items()} == {
        k: v[:4] + v[5:] for k, v in ours.items()
    }


def test_ware_id_is_pack_of_the_equivalent_tree(layered: Path, tmp_path: Path) -> None:
    ware = import_source(f"oci:{layered}:base", workdir=tmp_path)
    build(expected(), tmp_path / "direct")
    assert ware == pack_dir(tmp_path / "direct", None, filters=Filters())
    # A filter applies as when packing: flatten sets owners and mtimes.
    flat = import_source(f"oci:{layered}:base", filters=PACK_FLATTEN, workdir=tmp_path)
    assert flat != ware
    assert flat == pack_dir(tmp_path / "direct", None, filters=PACK_FLATTEN)


def test_tags_choose_the_image(layered: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(layered, layout, symlinks=True)
    umoci("new", "--image", f"{layout}:other")
    umoci("unpack", "--image", f"{layout}:other", tmp_path / "bundle")
    make_rootfs(tmp_path / "bundle" / "rootfs")
    set_times(tmp_path / "bundle" / "rootfs")
    umoci("repack", "--image", f"{layout}:other", tmp_path / "bundle")

    base = import_source(f"oci:{layout}:base", workdir=tmp_path)
    other = import_source(f"oci:{layout}:other", workdir=tmp_path)
    assert base == import_source(f"oci:{layered}", workdir=tmp_path)  # the only image
    assert other != base
    assert other == pack_dir(tmp_path / "bundle" / "rootfs", None, filters=Filters())

    with pytest.raises(RepeatrError) as missing:
        import_source(f"oci:{layout}:nope", workdir=tmp_path)
    assert missing.value.category is Category.WARE_NOT_FOUND
    assert "base" in str(missing.value) and "other" in str(missing.value)  # lists the tags
    with pytest.raises(RepeatrError) as several:
        import_source(f"oci:{layout}", workdir=tmp_path)
    assert several.value.category is Category.USAGE
    assert set(os.listdir(tmp_path)) == {"layout", "bundle"}  # no temp dirs left


def _platform_index(layout: Path, entries: list[tuple[str, dict[str, Any]]]) -> None:
    """Replace index.json with one tag pointing at a nested index of ``entries``."""
    digest, size = write_json(
        layout,
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                dict(desc, platform=dict(zip(("os", "architecture"), p.split("/"), strict=True)))
                for p, desc in entries
            ],
        },
    )
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, "digest": digest, "size": size,
         "annotations": {REF_NAME: "multi"}}
    ]}
    (layout / "index.json").write_text(json.dumps(index))


def test_multi_platform_index_picks_linux_amd64(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    arm = hand_layout(layout, [(tar_layer([(member("arch"), b"arm64\n")]), TAR_GZIP)], "arm")
    amd = hand_layout(layout, [(tar_layer([(member("arch"), b"amd64\n")]), TAR_GZIP)], "amd")
    want = import_source(f"oci:{layout}:amd", workdir=tmp_path)
    assert want != import_source(f"oci:{layout}:arm", workdir=tmp_path)
    _platform_index(layout, [("linux/arm64", arm), ("linux/amd64", amd)])
    assert import_source(f"oci:{layout}:multi", workdir=tmp_path) == want
    assert import_source(f"oci:{layout}", workdir=tmp_path) == want

    _platform_index(layout, [("linux/arm64", arm), ("linux/s390x", amd)])
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}:multi", workdir=tmp_path)
    assert err.value.category is Category.WARE_NOT_FOUND
    assert "linux/arm64" in str(err.value) and "linux/s390x" in str(err.value)
    got = import_source(f"oci:{layout}:multi", platform="linux/s390x", workdir=tmp_path)
    assert got == want


def _copy(layered: Path, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    layout = tmp_path / "layout"
    shutil.copytree(layered, layout, symlinks=True)
    return layout, layers_of(layout, "base")


def test_damaged_layer_blob_is_a_hash_mismatch(layered: Path, tmp_path: Path) -> None:
    layout, layers = _copy(layered, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    path = blob_path(layout, layers[0]["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # breaks the gzip stream too
    path.write_bytes(bytes(data))
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}:base", workdir=work)
    assert err.value.category is Category.HASH_MISMATCH
    assert os.listdir(work) == []


def test_blob_swapped_for_another_valid_layer_is_a_hash_mismatch(
    layered: Path, tmp_path: Path
) -> None:
    layout, layers = _copy(layered, tmp_path)
    # A well-formed plain tar in place of layer 4: only the digest can tell.
    swapped = tar_layer([(member("etc/motd"), b"evil\n")])
    blob_path(layout, layers[3]["digest"]).write_bytes(swapped.ljust(layers[3]["size"], b"\0"))
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}:base", workdir=tmp_path)
    assert err.value.category is Category.HASH_MISMATCH


def test_missing_blob_and_unknown_media_type(layered: Path, tmp_path: Path) -> None:
    layout, layers = _copy(layered, tmp_path)
    os.unlink(blob_path(layout, layers[2]["digest"]))
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{layout}:base", workdir=tmp_path)
    assert err.value.category is Category.WARE_NOT_FOUND
    assert layers[2]["digest"] in str(err.value)

    enc = tmp_path / "enc"
    hand_layout(enc, [(tar_layer([(member("x"), b"x")]), TAR_GZIP + "+encrypted")])
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{enc}", workdir=tmp_path)
    assert err.value.category is Category.USAGE
    assert "+encrypted" in str(err.value)


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(RepeatrError) as err:
        import_source(f"oci:{tmp_path}", workdir=tmp_path)
    assert err.value.category is Category.USAGE
