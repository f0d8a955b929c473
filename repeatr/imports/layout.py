"""Reading an OCI image layout on disk: ``index.json`` -> manifest -> layer blobs.

An OCI image layout (image-spec ``image-layout.md``) is what ``skopeo copy
... oci:DIR:TAG`` and ``umoci`` write: an ``oci-layout`` marker file, an
``index.json`` naming images (a tag is the annotation
``org.opencontainers.image.ref.name``), and ``blobs/<alg>/<hex>``, each blob
named by the digest of its bytes.

Choosing the image: with a tag, the ``index.json`` entries carrying it;
without one, every entry, which must all be one image (one tag, or none).
An entry that is itself an index (a multi-platform "manifest list") is
resolved to the manifest for the requested platform (default
``linux/amd64``); when none matches, the error lists the platforms there are.

Trust: every blob is checked against its name. JSON blobs are read whole
(bounded) and checked before they are parsed; layers are checked *while*
they are read (:class:`VerifiedBlob`), and the check is completed by
:meth:`VerifiedBlob.verify` after the tar is consumed. A digest is only ever
turned into a path after it matched ``<alg>:<hex>`` exactly, so a hostile
``index.json`` cannot name a file outside ``blobs/``.

Errors (categories are the contract, see docs/importing.md):

- not a layout, a bad ``oci:`` reference: ``UsageError`` (USAGE)
- unknown tag, no manifest for the platform: ``UsageError(WARE_NOT_FOUND)``,
  the message lists what there is
- a blob missing from ``blobs/``: ``FilesetError(WARE_NOT_FOUND)``
- a blob whose bytes don't match its digest or declared size:
  ``FilesetError(HASH_MISMATCH)`` (like a ware whose content doesn't match
  its ID: the name is a content address and the content is not it)
- malformed JSON, bad digests: ``FilesetError(WARE_CORRUPT)``
- a media type we can't read (encrypted layers, schema-1 manifests):
  ``FilesetError(USAGE)`` naming it
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

import msgspec

from repeatr.errors import Category, FilesetError, UsageError

__all__ = [
    "DEFAULT_PLATFORM",
    "REF_NAME",
    "Image",
    "Layer",
    "OciRef",
    "VerifiedBlob",
    "open_image",
    "parse_oci_ref",
]

REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_PLATFORM = "linux/amd64"
#: index.json, manifests and indexes are small; anything bigger is hostile.
_MAX_JSON = 4 << 20

MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
#: Layer media types we read, and the compression each declares. The tar
#: reader detects compression from magic bytes anyway (as containerd does), so
#: a layer labelled wrongly still reads; the label only has to be known.
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "tar",
    "application/vnd.oci.image.layer.v1.tar+gzip": "tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "tar+gzip",
}

_T = TypeVar("_T")

_DIGEST = re.compile(r"(sha256):([0-9a-f]{64})|(sha512):([0-9a-f]{128})")


# --- the JSON documents --------------------------------------------------------


class _Doc(msgspec.Struct, kw_only=True, rename="camel"):
    """Unknown fields are ignored: the spec allows extensions."""


class Platform(_Doc, kw_only=True):
    architecture: str = ""
    os: str = ""
    variant: str = ""

    def __str__(self) -> str:
        text = f"{self.os or '?'}/{self.architecture or '?'}"
        return f"{text}/{self.variant}" if self.variant else text


class Descriptor(_Doc, kw_only=True):
    media_type: str = ""
    digest: str
    size: int = -1
    annotations: dict[str, str] = {}
    platform: Platform | None = None

    @property
    def tag(self) -> str | None:
        return self.annotations.get(REF_NAME)


class _Index(_Doc, kw_only=True):
    media_type: str = ""
    manifests: list[Descriptor] = []


class _Manifest(_Doc, kw_only=True):
    media_type: str = ""
    config: Descriptor
    layers: list[Descriptor] = []


# --- references ------------------------------------------------------------------


@dataclass(frozen=True)
class OciRef:
    """``oci:DIR[:TAG]``, split as skopeo splits it: at the first ``:`` after ``oci:``."""

    dir: Path
    tag: str | None

    def __str__(self) -> str:
        return f"oci:{self.dir}" + (f":{self.tag}" if self.tag else "")


def parse_oci_ref(text: str) -> OciRef:
    if not text.startswith("oci:"):
        raise UsageError(f"{text!r} is not an OCI layout reference (expected oci:DIR[:TAG])")
    rest = text[len("oci:") :]
    path, sep, tag = rest.partition(":")
    if not path:
        raise UsageError(f"{text!r}: no directory given (expected oci:DIR[:TAG])")
    if sep and not tag:
        raise UsageError(f"{text!r}: empty tag (expected oci:DIR[:TAG])")
    return OciRef(Path(path), tag or None)


# --- blobs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer of the chosen image, in order (lowest first)."""

    index: int  # 1-based, for messages
    count: int
    digest: str
    size: int
    media_type: str
    path: Path

    @property
    def kind(self) -> str:
        return LAYER_TYPES[self.media_type]

    def describe(self) -> str:
        return f"layer {self.index}/{self.count} {self.digest}"

    def open(self) -> VerifiedBlob:
        return VerifiedBlob.open(self.path, self.digest, self.size, self.describe())


@dataclass(frozen=True)
class Image:
    ref: OciRef
    manifest_digest: str
    platform: str | None
    layers: tuple[Layer, ...]


def _split_digest(digest: str, what: str) -> tuple[str, str]:
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise FilesetError(
            f"{what}: invalid or unsupported digest {digest!r}"
            " (expected sha256:<64 hex> or sha512:<128 hex>)",
            category=Category.WARE_CORRUPT,
        )
    alg = match.group(1) or match.group(3)
    hexd = match.group(2) or match.group(4)
    return alg, hexd


def _mismatch(what: str, digest: str, why: str) -> FilesetError:
    return FilesetError(
        f"{what}: blob does not match its digest {digest}: {why}",
        category=Category.HASH_MISMATCH,
        hint="the layout is damaged or was tampered with: copy the image again",
    )


class VerifiedBlob(io.RawIOBase):
    """A blob file that hashes every byte read; :meth:`verify` completes the check.

    ``verify`` reads whatever the consumer left (a tar reader stops at the
    end-of-archive blocks) so the whole blob is hashed, then compares digest
    and size. ``bytes_read`` counts for progress.
    """

    def __init__(self, file: BinaryIO, digest: str, size: int, what: str) -> None:
        super().__init__()
        self._file = file
        self.digest = digest
        self.size = size
        self.what = what
        alg, self._hex = _split_digest(digest, what)
        self._hash = hashlib.new(alg)
        self.bytes_read = 0

    @classmethod
    def open(cls, path: Path, digest: str, size: int, what: str) -> VerifiedBlob:
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise FilesetError(
                f"{what}: blob {digest} is missing: no file {os.fspath(path)!r}",
                category=Category.WARE_NOT_FOUND,
                hint="the layout is incomplete: copy the image again (e.g. with skopeo copy)",
            ) from None
        except OSError as exc:
            raise FilesetError(
                f"{what}: cannot open blob {os.fspath(path)!r}: {exc.strerror or exc}",
                category=Category.INOPERABLE_PATH,
            ) from exc
        return cls(file, digest, size, what)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._hash.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return cast(int, n or 0)

    def verify(self) -> None:
        """Hash the rest of the blob; raise HASH_MISMATCH unless it is what its name says."""
        buf = bytearray(1 << 20)
        while self.readinto(buf):
            pass
        if self.size >= 0 and self.bytes_read != self.size:
            raise _mismatch(
                self.what, self.digest, f"{self.bytes_read} bytes, the descriptor says {self.size}"
            )
        got = self._hash.hexdigest()
        if got != self._hex:
            raise _mismatch(self.what, self.digest, f"its content hashes to {got}")

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def _blob_path(root: Path, digest: str, what: str) -> Path:
    alg, hexd = _split_digest(digest, what)
    return root / "blobs" / alg / hexd


def _read_json_blob(root: Path, desc: Descriptor, what: str) -> dict[str, Any]:
    path = _blob_path(root, desc.digest, what)
    if desc.size > _MAX_JSON:
        raise FilesetError(
            f"{what}: {desc.digest} is {desc.size} bytes, too big for a manifest",
            category=Category.WARE_CORRUPT,
        )
    with VerifiedBlob.open(path, desc.digest, desc.size, what) as blob:
        data = blob.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise FilesetError(
                f"{what}: {desc.digest} is over {_MAX_JSON} bytes, too big for a manifest",
                category=Category.WARE_CORRUPT,
            )
        blob.verify()
    return _decode_json(data, f"{what} {desc.digest}")


def _decode_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise FilesetError(
            f"{what}: not valid JSON: {exc}", category=Category.WARE_CORRUPT
        ) from exc
    if not isinstance(doc, dict):
        raise FilesetError(f"{what}: not a JSON object", category=Category.WARE_CORRUPT)
    return doc


def _convert(doc: dict[str, Any], kind: type[_T], what: str) -> _T:
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise FilesetError(f"{what}: {exc}", category=Category.WARE_CORRUPT) from exc


# --- choosing the image ------------------------------------------------------------


def _describe_tags(descs: list[Descriptor]) -> str:
    tags = sorted({d.tag for d in descs if d.tag is not None})
    untagged = sum(1 for d in descs if d.tag is None)
    parts = [", ".join(tags)] if tags else []
    if untagged:
        parts.append(f"{untagged} untagged")
    return "; ".join(parts) or "none"


def _choose_platform(descs: list[Descriptor], platform: str, what: str) -> Descriptor:
    want = platform.split("/")
    if len(want) not in (2, 3) or not all(want):
        raise UsageError(f"platform {platform!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64")
    for desc in descs:
        p = desc.platform
        if p is None or p.os != want[0] or p.architecture != want[1]:
            continue
        if len(want) == 3 and p.variant != want[2]:
            continue
        return desc
    have = ", ".join(str(d.platform) if d.platform else f"unknown ({d.digest})" for d in descs)
    raise UsageError(
        f"{what} has no image for {platform}; it has: {have}",
        category=Category.WARE_NOT_FOUND,
        hint="choose one with --platform OS/ARCH[/VARIANT]",
    )


def _read_index_json(root: Path) -> _Index:
    if not (root / "oci-layout").is_file():
        why = "no such directory" if not root.is_dir() else "no oci-layout file in it"
        raise UsageError(
            f"{os.fspath(root)!r} is not an OCI image layout: {why}",
            hint="make one with: skopeo copy docker://IMAGE oci:DIR:TAG",
        )
    path = root / "index.json"
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_JSON + 1)
    except OSError as exc:
        raise FilesetError(
            f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}",
            category=Category.WARE_CORRUPT,
        ) from exc
    if len(data) > _MAX_JSON:
        raise FilesetError(f"{os.fspath(path)!r} is too big", category=Category.WARE_CORRUPT)
    return _convert(_decode_json(data, os.fspath(path)), _Index, os.fspath(path))


def open_image(ref: OciRef, platform: str = DEFAULT_PLATFORM) -> Image:
    """Resolve ``ref`` to its manifest and list its layers (no layer is read yet)."""
    root = ref.dir
    index = _read_index_json(root)
    where = f"{os.fspath(root)!r}"
    if ref.tag is not None:
        candidates = [d for d in index.manifests if d.tag == ref.tag]
        if not candidates:
            raise UsageError(
                f"no image tagged {ref.tag!r} in {where}; tags there: "
                f"{_describe_tags(index.manifests)}",
                category=Category.WARE_NOT_FOUND,
            )
    else:
        candidates = list(index.manifests)
        if not candidates:
            raise FilesetError(
                f"{where}: index.json lists no images", category=Category.WARE_CORRUPT
            )
        if len({d.tag for d in candidates}) > 1:
            raise UsageError(
                f"{where} holds several images; name one as oci:DIR:TAG."
                f" Tags there: {_describe_tags(candidates)}"
            )
    chosen = candidates[0] if len(candidates) == 1 else _choose_platform(
        candidates, platform, f"{ref}"
    )
    chosen_platform = str(chosen.platform) if chosen.platform else None
    # Follow nested indexes (multi-platform images) down to one manifest.
    for _depth in range(8):
        what = f"image {ref}"
        doc = _read_json_blob(root, chosen, what)
        media_type = chosen.media_type or str(doc.get("mediaType", ""))
        if not media_type:  # old layouts leave it out: go by shape
            media_type = next(iter(INDEX_TYPES)) if "manifests" in doc else next(
                iter(MANIFEST_TYPES)
            )
        if media_type in INDEX_TYPES:
            nested = _convert(doc, _Index, f"{what}: index {chosen.digest}")
            if not nested.manifests:
                raise FilesetError(
                    f"{what}: index {chosen.digest} lists no images",
                    category=Category.WARE_CORRUPT,
                )
            if len(nested.manifests) == 1 and nested.manifests[0].platform is None:
                chosen = nested.manifests[0]
            else:
                chosen = _choose_platform(nested.manifests, platform, what)
                chosen_platform = str(chosen.platform)
            continue
        if media_type not in MANIFEST_TYPES:
            raise FilesetError(
                f"{what}: unsupported manifest media type {media_type!r}",
                category=Category.USAGE,
                hint="supported: " + ", ".join(sorted(MANIFEST_TYPES | INDEX_TYPES)),
            )
        manifest = _convert(doc, _Manifest, f"{what}: manifest {chosen.digest}")
        return Image(ref, chosen.digest, chosen_platform, _layers(root, manifest, what))
    raise FilesetError(f"image {ref}: indexes nested too deep", category=Category.WARE_CORRUPT)


def _layers(root: Path, manifest: _Manifest, what: str) -> tuple[Layer, ...]:
    count = len(manifest.layers)
    out = []
    for i, desc in enumerate(manifest.layers, 1):
        label = f"{what}: layer {i}/{count} {desc.digest}"
        if desc.media_type not in LAYER_TYPES:
            raise FilesetError(
                f"{label}: unsupported layer media type {desc.media_type!r}",
                category=Category.USAGE,
                hint="supported: plain, gzip'd and zstd'd tar layers (OCI and Docker v2 types);"
                " encrypted layers are not",
            )
        path = _blob_path(root, desc.digest, label)
        out.append(Layer(i, count, desc.digest, desc.size, desc.media_type, path))
    return tuple(out)
