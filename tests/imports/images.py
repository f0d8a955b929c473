"""Real images for the import tests: a hand-made busybox rootfs, umoci layouts, hand-written layers.

Everything here is made by independent tools (umoci, GNU tar, Python's
tarfile, zstandard), never by repeatr's own writer.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import zstandard

from repeatr.fileset.entry import EntryType

BUSYBOX = Path("/usr/bin/busybox")
MTIME = 1_600_000_000

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
REF_NAME = "org.opencontainers.image.ref.name"

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nreuser:x:1000:1000::/home/reuser:/bin/sh\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def busybox_digest() -> str:
    return sha256(BUSYBOX.read_bytes())


# --- trees ---------------------------------------------------------------------


def set_times(root: Path, mtime: int = MTIME) -> None:
    """Every entry under ``root`` (and root) gets ``mtime``, symlinks included."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def make_rootfs(root: Path) -> None:
    """A small busybox rootfs, made by hand. ``root`` may exist (umoci makes it)."""
    root.mkdir(exist_ok=True)
    os.chmod(root, 0o755)
    for d, mode in [
        ("bin", 0o755), ("etc", 0o755), ("etc/conf.d", 0o755), ("home", 0o755),
        ("home/reuser", 0o700), ("tmp", 0o1777), ("usr", 0o755), ("usr/bin", 0o755),
        ("var", 0o755), ("var/old", 0o755),
    ]:
        (root / d).mkdir()
        os.chmod(root / d, mode)
    shutil.copyfile(BUSYBOX, root / "bin/busybox")
    os.chmod(root / "bin/busybox", 0o755)
    for applet in ("sh", "ls", "cat"):
        os.symlink("busybox", root / "bin" / applet)
    os.symlink("../../bin/busybox", root / "usr/bin/env")
    files = {
        "etc/passwd": PASSWD,
        "etc/motd": b"welcome\n",
        "etc/conf.d/a.conf": b"a=1\n",
        "etc/conf.d/b.conf": b"b=2\n",
        "home/reuser/.profile": b"export PS1='$ '\n",
        "var/old/data": b"old data\n",
        "bin/suid": b"#!/bin/sh\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
        os.chmod(root / name, 0o644)
    os.chmod(root / "bin/suid", 0o4755)
    for p in (root / "home/reuser", root / "home/reuser/.profile"):
        os.chown(p, 1000, 1000)


def listing(root: Path, *, hardlinks: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root``: (type, mode, uid, gid, mtime, content or target).

    Files must have one link each unless ``hardlinks``.
    """
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (".", *dirnames, *filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.normpath(os.path.relpath(path, root))
            if rel in out:
                continue
            mode = st.st_mode
            what: Any
            if stat.S_ISDIR(mode):
                kind, what = EntryType.DIR, None
            elif stat.S_ISLNK(mode):
                kind, what = EntryType.SYMLINK, os.readlink(path)
            elif stat.S_ISREG(mode):
                data = Path(path).read_bytes()
                kind, what = EntryType.FILE, data if len(data) < 256 else sha256(data)
                assert hardlinks or st.st_nlink == 1, f"{rel} is hardlinked"
            elif stat.S_ISCHR(mode):
                kind, what = EntryType.CHAR, (os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                kind, what = EntryType.FIFO, None
            out[rel] = (kind, stat.S_IMODE(mode), st.st_uid, st.st_gid, int(st.st_mtime), what)
    return out


def build(spec: dict[str, tuple[Any, ...]], root: Path) -> None:
    """Make the tree a listing describes, directly (for comparing ware IDs)."""
    root.mkdir()
    for rel in sorted(spec, key=lambda r: (r != ".", r.count("/"), r)):
        kind, mode, uid, gid, mtime, what = spec[rel]
        path = root / rel
        if kind is EntryType.DIR:
            if rel != ".":
                path.mkdir()
        elif kind is EntryType.SYMLINK:
            os.symlink(what, path)
        elif kind is EntryType.FILE:
            path.write_bytes(what if isinstance(what, bytes) else BUSYBOX.read_bytes())
        os.chown(path, uid, gid, follow_symlinks=False)
        if kind is not EntryType.SYMLINK:
            os.chmod(path, mode)
    for rel in sorted(spec, key=lambda r: -r.count("/")):
        mtime = spec[rel][4]
        os.utime(root / rel, (mtime, mtime), follow_symlinks=False)


# --- layer tars by hand ------------------------------------------------------------


def tar_layer(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    mode: int = 0o644,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
    mtime: int = MTIME,
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid, info.gid, info.mtime = uid, gid, mtime
    return info


def compress(data: bytes, media_type: str) -> bytes:
    if media_type == TAR_GZIP:
        return gzip.compress(data, mtime=0)
    if media_type == TAR_ZSTD:
        return zstandard.ZstdCompressor().compress(data)
    return data


# --- layouts ------------------------------------------------------------------------


def write_blob(layout: Path, data: bytes) -> str:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def blob_path(layout: Path, digest: str) -> Path:
    alg, hexd = digest.split(":")
    return layout / "blobs" / alg / hexd


def read_json(layout: Path, digest: str) -> Any:
    return json.loads(blob_path(layout, digest).read_bytes())


def write_json(layout: Path, doc: Any) -> tuple[str, int]:
    data = json.dumps(doc).encode()
    return write_blob(layout, data), len(data)


def hand_layout(
    layout: Path, layers: list[tuple[bytes, str]], tag: str | None = "latest"
) -> dict[str, Any]:
    """A whole OCI layout written by hand: ``layers`` are (plain tar, media type)."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    descs = []
    for plain, media_type in layers:
        data = compress(plain, media_type)
        digest = write_blob(layout, data)
        descs.append({"mediaType": media_type, "digest": digest, "size": len(data)})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(p)}" for p, _ in layers]},
    }
    config_digest, config_size = write_json(layout, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": descs,
    }
    digest, size = write_json(layout, manifest)
    desc: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}
    if tag is not None:
        desc["annotations"] = {REF_NAME: tag}
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {
        "schemaVersion": 2, "manifests": []
    }
    index["manifests"].append(desc)
    index_path.write_text(json.dumps(index))
    return desc


def append_layer(layout: Path, tag: str, plain: bytes, media_type: str) -> None:
    """Add a hand-made layer on top of the image tagged ``tag`` (config and index updated)."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag]
    manifest = read_json(layout, desc["digest"])
    config = read_json(layout, manifest["config"]["digest"])
    config["rootfs"]["diff_ids"].append(f"sha256:{sha256(plain)}")
    digest, size = write_json(layout, config)
    manifest["config"].update(digest=digest, size=size)
    data = compress(plain, media_type)
    manifest["layers"].append(
        {"mediaType": media_type, "digest": write_blob(layout, data), "size": len(data)}
    )
    digest, size = write_json(layout, manifest)
    desc.update(digest=digest, size=size)
    (layout / "index.json").write_text(json.dumps(index))


def recompress_layer(layout: Path, tag: str, i: int, media_type: str) -> None:
    """Store layer ``i`` of image ``tag`` with another compression (same plain tar)."""
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag]
    manifest = read_json(layout, desc["digest"])
    layer = manifest["layers"][i]
    plain = blob_path(layout, layer["digest"]).read_bytes()
    if layer["mediaType"] == TAR_ZSTD:
        plain = zstandard.ZstdDecompressor().decompressobj().decompress(plain)
    elif layer["mediaType"] == TAR_GZIP:
        plain = gzip.decompress(plain)
    data = compress(plain, media_type)
    layer.update(mediaType=media_type, digest=write_blob(layout, data), size=len(data))
    digest, size = write_json(layout, manifest)
    desc.update(digest=digest, size=size)
    (layout / "index.json").write_text(json.dumps(index))


def layers_of(layout: Path, tag: str) -> list[dict[str, Any]]:
    index = json.loads((layout / "index.json").read_text())
    (desc,) = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == tag]
    layers: list[dict[str, Any]] = read_json(layout, desc["digest"])["layers"]
    return layers


def umoci(*args: str | Path) -> None:
    subprocess.run(["umoci", *map(os.fspath, args)], check=True, capture_output=True)
