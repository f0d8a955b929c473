"""One import: a source (``docker export`` tar or OCI layout) -> flattened tree -> ware.

``flatten(source, ...)`` is a context manager yielding the directory holding
the flattened root filesystem; ``import_source`` packs it (and stores it in a
warehouse when given one). The work happens in a fresh temp dir
(``repeatr-import-*``) under ``workdir`` (default ``/var/tmp``, else the
system temp dir), holding the spooled content and the tree: both on one
filesystem. The temp dir is removed on every path out, including errors and
Ctrl-C.

Filters are applied while writing the tree and again by ``pack_dir`` (they
are idempotent). The default, :data:`IMPORT_KEEP`, keeps everything the image
says: owners, mtimes, setid bits, device nodes. An image's IDs are then a
function of the image alone, and a rootfs keeps the owners it needs (e.g.
root-owned ``/etc/shadow``, setuid ``su``) when it is unpacked with
``lossless`` filters.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from repeatr.errors import Category, FilesetError, UsageError
from repeatr.fileset.limits import Limits
from repeatr.fileset.pack import pack_dir
from repeatr.fileset.reader import read_archive
from repeatr.imports.flatten import Flattener
from repeatr.imports.layout import DEFAULT_PLATFORM, Image, VerifiedBlob, open_image, parse_oci_ref
from repeatr.linux.rmtree import remove_tree
from repeatr.model.filters import Filters
from repeatr.model.wareid import TAR, WareID
from repeatr.warehouse import Warehouse

__all__ = ["IMPORT_KEEP", "Flattened", "flatten", "import_source"]

#: The default import filter: keep everything as the image has it.
IMPORT_KEEP = Filters()
TMP_PREFIX = "repeatr-import-"

Log = Callable[[str], None]
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Flattened:
    root: Path  # the flattened root filesystem
    layers: int
    entries: int
    image: Image | None  # None for a docker export tar


def default_workdir() -> Path:
    var_tmp = Path("/var/tmp")
    if var_tmp.is_dir() and os.access(var_tmp, os.W_OK | os.X_OK):
        return var_tmp
    return Path(tempfile.gettempdir())


def _make_tmp(workdir: Path | None) -> Path:
    parent = workdir if workdir is not None else default_workdir()
    try:
        return Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent))
    except OSError as exc:
        raise FilesetError(
            f"cannot create a temp dir under {os.fspath(parent)!r}: {exc.strerror or exc}",
            category=Category.INOPERABLE_PATH,
            hint="pass --workdir DIR on a filesystem with room for the unpacked image",
        ) from exc


@contextmanager
def flatten(
    source: str | BinaryIO,
    *,
    filters: Filters = IMPORT_KEEP,
    workdir: Path | None = None,
    platform: str = DEFAULT_PLATFORM,
    limits: Limits | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> Iterator[Flattened]:
    """Flatten ``source`` into a temp dir, yield it, remove it.

    ``source``: ``oci:DIR[:TAG]``, the path of a ``docker export`` tar (any
    compression), or an open stream of one.
    """
    say = log or (lambda _msg: None)
    image = None
    if isinstance(source, str) and source.startswith("oci:"):
        image = open_image(parse_oci_ref(source), platform)
        say(
            f"image {image.ref}: manifest {image.manifest_digest}"
            + (f" ({image.platform})" if image.platform else "")
            + f", {len(image.layers)} layer(s)"
        )
    tmp = _make_tmp(workdir)
    try:
        content = tmp / "content"
        content.mkdir(mode=0o700)
        flattener = Flattener(content, limits=limits or Limits())
        if image is not None:
            done = 0
            for layer in image.layers:
                size = f"{layer.size} bytes, " if layer.size >= 0 else ""
                say(f"{layer.describe()} ({size}{layer.kind})")
                done += _read_layer(flattener, layer.open(), layer.describe())
                if progress is not None:
                    progress("read", done)
        else:
            _read_export(flattener, source)
        rootfs = tmp / "rootfs"
        rootfs.mkdir(mode=0o700)

        def written(done: int) -> None:
            if progress is not None:
                progress("flatten", done)

        entries = flattener.write(rootfs, filters, written)
        say(f"flattened {flattener.layers} layer(s) into {entries} entries")
        yield Flattened(rootfs, flattener.layers, entries, image)
    finally:
        remove_tree(tmp)


def _read_layer(flattener: Flattener, blob: VerifiedBlob, what: str) -> int:
    """Read one layer blob, verifying its digest; a broken blob is a HASH_MISMATCH first."""
    with blob:
        try:
            with read_archive(cast(BinaryIO, blob)) as members:
                flattener.add_layer(members, what)
        except FilesetError as err:
            # A damaged blob usually breaks decompression or the tar before
            # the digest can be compared: say that it is damaged, not just
            # that the tar is odd. A blob that matches its digest is a
            # faithful copy of a bad layer: then the original error stands.
            try:
                blob.verify()
            except FilesetError as mismatch:
                raise mismatch from err
            raise
        blob.verify()
        return blob.bytes_read


def _read_export(flattener: Flattener, source: str | BinaryIO) -> None:
    what = "docker export tar"
    if isinstance(source, str):
        what = f"{what} {source!r}"
        try:
            file: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise UsageError(
                f"{source!r}: no such file",
                hint="give a `docker export` tar or oci:DIR[:TAG]",
            ) from None
        except OSError as exc:
            raise UsageError(
                f"cannot read {source!r}: {exc.strerror or exc}",
                category=Category.INOPERABLE_PATH,
            ) from exc
    else:
        file = source
    try:
        with read_archive(file) as members:
            flattener.add_layer(members, what, whiteouts=False)
    finally:
        if isinstance(source, str):
            file.close()
    top = set(flattener.top_level())
    if "manifest.json" in top and top & {"repositories", "oci-layout", "blobs"}:
        raise UsageError(
            f"{what} looks like a `docker save` archive (images and layers), not a"
            " `docker export` (one root filesystem)",
            hint="convert it with: skopeo copy docker-archive:FILE oci:DIR:TAG,"
            " then repeatr import oci:DIR:TAG",
        )


def import_source(
    source: str | BinaryIO,
    *,
    filters: Filters = IMPORT_KEEP,
    warehouse: Warehouse | None = None,
    workdir: Path | None = None,
    platform: str = DEFAULT_PLATFORM,
    packtype: str = TAR,
    limits: Limits | None = None,
    log: Log | None = None,
    progress: Progress | None = None,
) -> WareID:
    """Flatten ``source``, pack it with ``filters``; store it in ``warehouse`` if given."""

    def packed(done: int) -> None:
        if progress is not None:
            progress("pack", done)

    with flatten(
        source,
        filters=filters,
        workdir=workdir,
        platform=platform,
        limits=limits,
        log=log,
        progress=progress,
    ) as flat:
        if warehouse is None:
            return pack_dir(flat.root, None, filters=filters, packtype=packtype, progress=packed)
        with warehouse.start_save() as session:
            ware = pack_dir(
                flat.root, session.file, filters=filters, packtype=packtype, progress=packed
            )
            session.commit(ware)
        if log is not None:
            log(f"saved {ware} to {warehouse.url}")
        return ware
