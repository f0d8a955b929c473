"""A layered OCI image built once per session: two layers by umoci, two by hand."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from .images import (
    MTIME,
    PASSWD,
    TAR,
    TAR_ZSTD,
    append_layer,
    make_rootfs,
    member,
    set_times,
    tar_layer,
    umoci,
)

PASSWD2 = PASSWD + b"daemon:x:2:2::/:/bin/false\n"

#: Layer 3 (zstd, by hand): an opaque dir, a dir replaced by a file (the new
#: file listed *before* its whiteout: whiteouts only hide lower layers),
#: hardlinks within the layer and to a lower layer, an implied parent (opt/).
LAYER3 = [
    (member("etc/conf.d/", tarfile.DIRTYPE, mode=0o750), None),
    (member("etc/conf.d/c.conf"), b"c=3\n"),
    (member("etc/conf.d/.wh..wh..opq", mode=0), b""),
    (member("var/old"), b"now a file\n"),
    (member("var/.wh.old", mode=0), b""),
    (member("opt/a"), b"shared\n"),
    (member("opt/b", tarfile.LNKTYPE, link="opt/a"), None),
    (member("bin/busybox.hard", tarfile.LNKTYPE, link="bin/busybox"), None),
]
#: Layer 4 (plain tar, by hand): a file replaced by a symlink (no whiteout),
#: a whiteout of a file in a dir it does not redeclare, a whiteout of nothing.
LAYER4 = [
    (member("etc/motd", tarfile.SYMTYPE, mode=0o777, link="issue"), None),
    (member("home/reuser/.wh..profile", mode=0), b""),
    (member("etc/.wh.nonexistent", mode=0), b""),
]


def build_layered(layout: Path, bundle: Path) -> None:
    umoci("init", "--layout", layout)
    umoci("new", "--image", f"{layout}:base")
    umoci("unpack", "--image", f"{layout}:base", bundle)
    rootfs = bundle / "rootfs"
    make_rootfs(rootfs)
    set_times(rootfs)
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:base", bundle)
    # Layer 2 (umoci): deletions become .wh. files; a file replaced; a file added.
    os.unlink(rootfs / "bin/ls")
    os.unlink(rootfs / "etc/conf.d/b.conf")
    (rootfs / "etc/passwd").write_bytes(PASSWD2)
    (rootfs / "etc/hostname").write_bytes(b"img\n")
    os.chmod(rootfs / "etc/hostname", 0o644)
    set_times(rootfs)
    umoci("repack", "--image", f"{layout}:base", bundle)
    append_layer(layout, "base", tar_layer(LAYER3), TAR_ZSTD)
    append_layer(layout, "base", tar_layer(LAYER4), TAR)


@pytest.fixture(scope="session")
def layered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout, tag ``base``, four layers (gzip, gzip, zstd, plain). Read-only."""
    if os.geteuid() != 0:
        pytest.fail("the import tests need root (owners other than ours, setuid files)")
    base = tmp_path_factory.mktemp("layered")
    layout = base / "layout"
    build_layered(layout, base / "bundle")
    assert MTIME  # every entry's mtime unless said otherwise
    return layout
