"""The tree hash against the original's published IDs, and its invariances.

Golden values: the IDs in ``trees.py`` are published by the original (compat.md
and rio's tests); they are never regenerated. The META bytes below were
written out by hand from compat.md's rules.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import random
import tarfile

import pytest
import zstandard

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.scan import scan_stream
from repeatr.fileset.treehash import TreeHasher, meta_cbor, record_hash
from repeatr.model.wareid import TAR, TAR_STRICT

from .trees import (
    DIR_BAR,
    FIXTURES,
    KITCHEN_SINK,
    MTIME,
    SANS_BASE,
    WITH_BASE,
    info,
    py_tar,
    sha384,
)

EMPTY = sha384(b"")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("tar_withBase.tgz", WITH_BASE),
        ("tar_sansBase.tgz", SANS_BASE),
        ("tar_kitchenSink.tgz", KITCHEN_SINK),
    ],
)
def test_published_vectors(fixture: str, expected: str) -> None:
    with open(FIXTURES / fixture, "rb") as f:
        assert str(scan_stream(f)) == expected


def test_dir_bar_vector_from_entries() -> None:
    h = TreeHasher()
    h.add(Entry(".", EntryType.DIR, 0o775, 1000, 1000, MTIME), None)
    h.add(Entry("bar", EntryType.FILE, 0o664, 1000, 1000, MTIME), EMPTY)
    assert str(h.ware_id()) == DIR_BAR


def test_dir_bar_vector_from_a_python_tar() -> None:
    data = py_tar(
        [
            (info("./", tarfile.DIRTYPE, mode=0o775), None),
            (info("./bar", mode=0o664), b""),
        ]
    )
    assert str(scan_stream(io.BytesIO(data))) == DIR_BAR


def test_meta_encoding_is_the_fixed_order_map() -> None:
    e = Entry("d/bar", EntryType.FILE, 0o664, 1000, 1000, MTIME, 5)
    # map(7) n "bar" t "f" p 436 u 1000 g 1000 m 1262304000 mn 5
    expected = (
        b"\xa7"
        b"\x61n\x63bar"
        b"\x61t\x61f"
        b"\x61p\x19\x01\xb4"
        b"\x61u\x19\x03\xe8"
        b"\x61g\x19\x03\xe8"
        b"\x61m\x1a\x4b\x3d\x3b\x00"
        b"\x62mn\x05"
    )
    assert meta_cbor(e) == expected


def test_meta_optional_fields_and_negative_mtime() -> None:
    dev = Entry("tty", EntryType.CHAR, 0o620, 0, 5, -1, 0, devmajor=4, devminor=1)
    assert meta_cbor(dev) == (
        b"\xa9\x61n\x63tty\x61t\x61c\x61p\x19\x01\x90\x61u\x00\x61g\x05"
        b"\x62dM\x04\x62dm\x01\x61m\x20\x62mn\x00"
    )
    link = Entry("l", EntryType.SYMLINK, 0o777, xattrs={"user.b": b"2", "user.a": b"1"})
    # map(8): no "l" key (empty target), xattrs sorted, values as text
    assert meta_cbor(link) == (
        b"\xa8\x61n\x61l\x61t\x61L\x61p\x19\x01\xff\x61u\x00\x61g\x00\x61m\x00\x62mn\x00"
        b"\x61x\xa2\x66user.a\x611\x66user.b\x612"
    )


def _shuffled_members(seed: int) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (info("./", tarfile.DIRTYPE, mode=0o755), None),
        (info("./a.txt"), b"a"),
        (info("./a/", tarfile.DIRTYPE, mode=0o700), None),
        (info("./a/b"), b"b" * 700),
        (info("./a-b"), b"ab"),
        (info("./z/y/x"), b"deep, parents inferred"),
        (info("./ln", tarfile.SYMTYPE, mode=0o777, linkname="a/b"), None),
    ]
    random.Random(seed).shuffle(members)
    return members


def test_entry_order_does_not_matter() -> None:
    ids = {str(scan_stream(io.BytesIO(py_tar(_shuffled_members(seed))))) for seed in range(6)}
    assert len(ids) == 1


def test_compression_does_not_matter() -> None:
    plain = py_tar(_shuffled_members(0))
    variants = [
        plain,
        gzip.compress(plain),
        bz2.compress(plain),
        lzma.compress(plain),
        zstandard.ZstdCompressor().compress(plain),
    ]
    ids = [str(scan_stream(io.BytesIO(v))) for v in variants]
    assert len(set(ids)) == 1
    assert not ids[0].endswith(":-")


def test_dot_slash_prefix_does_not_matter() -> None:
    with_dot = py_tar([(info("./", tarfile.DIRTYPE), None), (info("./x"), b"1")])
    without = py_tar([(info(".", tarfile.DIRTYPE), None), (info("x"), b"1")])
    assert scan_stream(io.BytesIO(with_dot)) == scan_stream(io.BytesIO(without))


def test_inferred_parents_equal_explicit_defaults() -> None:
    inferred = TreeHasher()
    inferred.add(Entry("p/q/f", EntryType.FILE, 0o644), EMPTY)
    explicit = TreeHasher()
    for name in (".", "p", "p/q"):
        explicit.add(Entry(name, EntryType.DIR, 0o755, 0, 0, MTIME), None)
    explicit.add(Entry("p/q/f", EntryType.FILE, 0o644), EMPTY)
    assert inferred.digest() == explicit.digest()


def test_explicit_dir_replaces_inferred_one_and_last_duplicate_wins() -> None:
    late = TreeHasher()
    late.add(Entry("p/f", EntryType.FILE, 0o644), EMPTY)
    late.add(Entry("p", EntryType.DIR, 0o700, 5, 5, 7), None)
    early = TreeHasher()
    early.add(Entry("p", EntryType.DIR, 0o700, 5, 5, 7), None)
    early.add(Entry("p/f", EntryType.FILE, 0o600), EMPTY)
    early.add(Entry("p/f", EntryType.FILE, 0o644), EMPTY)
    assert late.digest() == early.digest()
    inferred_only = TreeHasher()
    inferred_only.add(Entry("p/f", EntryType.FILE, 0o644), EMPTY)
    assert inferred_only.digest() != late.digest()


def test_quirk_symlinks_are_invisible_to_tar_but_not_to_strict() -> None:
    def ids(target: str) -> tuple[bytes | None, bytes | None]:
        out = []
        for packtype in (TAR, TAR_STRICT):
            h = TreeHasher(packtype)
            h.add(Entry(".", EntryType.DIR, 0o755), None)
            h.add(Entry("f", EntryType.FILE, 0o644), EMPTY)
            if target:
                h.add(Entry("l", EntryType.SYMLINK, 0o777, linkname=target), None)
            out.append(h.digest())
        return out[0], out[1]

    none_tar, none_strict = ids("")
    one_tar, one_strict = ids("f")
    other_tar, other_strict = ids("g")
    assert none_tar == one_tar == other_tar
    assert len({none_strict, one_strict, other_strict}) == 3
    assert none_tar == none_strict  # no non-file entries: the two hashes agree


def test_strict_record_hash_is_sha384_of_a_one_key_map() -> None:
    link = Entry("l", EntryType.SYMLINK, 0o777, linkname="f")
    assert record_hash(link) == sha384(b"\xa1\x61m" + meta_cbor(link))


def test_nothing_added_is_the_empty_id() -> None:
    assert str(TreeHasher().ware_id()) == "tar:-"
    assert str(TreeHasher(TAR_STRICT).ware_id()) == "tar-strict:-"


def test_child_of_a_file_is_corrupt() -> None:
    h = TreeHasher()
    h.add(Entry("a", EntryType.FILE, 0o644), EMPTY)
    h.add(Entry("a/b", EntryType.FILE, 0o644), EMPTY)
    with pytest.raises(FilesetError) as info_:
        h.digest()
    assert info_.value.category is Category.WARE_CORRUPT


def test_root_that_is_neither_dir_nor_file_is_corrupt() -> None:
    # A root file alone is a single-file fileset (tests/fileset/test_single_file.py).
    alone = TreeHasher()
    alone.add(Entry(".", EntryType.FILE, 0o644), EMPTY)
    assert alone.digest() == record_hash(Entry(".", EntryType.FILE, 0o644), EMPTY)
    for bad in (
        [Entry(".", EntryType.SYMLINK, 0o777, linkname="x")],
        [Entry(".", EntryType.FILE, 0o644), Entry("b", EntryType.FILE, 0o644)],
    ):
        h = TreeHasher()
        for entry in bad:
            h.add(entry, EMPTY if entry.type is EntryType.FILE else None)
        with pytest.raises(FilesetError) as info_:
            h.digest()
        assert info_.value.category is Category.WARE_CORRUPT


def test_metadata_changes_change_the_hash() -> None:
    def digest(**changes: object) -> bytes | None:
        h = TreeHasher()
        fields: dict[str, object] = {"mode": 0o644, "uid": 1, "gid": 2, "mtime": 3}
        fields.update(changes)
        h.add(Entry("f", EntryType.FILE, **fields), EMPTY)  # type: ignore[arg-type]
        return h.digest()

    base = digest()
    variants = [
        digest(mode=0o600),
        digest(uid=9),
        digest(gid=9),
        digest(mtime=4),
        digest(mtime_ns=1),
        digest(xattrs={"user.k": b"v"}),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)
    assert digest(size=12345) == base  # size is not hashed


def test_unknown_packtype_is_a_usage_error() -> None:
    with pytest.raises(FilesetError) as info_:
        TreeHasher("zip")
    assert info_.value.category is Category.USAGE
