"""Filters applied to single entries."""

from __future__ import annotations

import os

import pytest

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.filtering import apply, is_noop
from repeatr.model import filters as F
from repeatr.model.filters import Filters


def _file(mode: int = 0o644) -> Entry:
    return Entry("d/f", EntryType.FILE, mode, uid=7, gid=8, mtime=100, mtime_ns=5)


def test_all_keep_returns_the_same_object() -> None:
    e = _file(0o7755)
    assert is_noop(Filters())
    assert apply(e, Filters()) is e
    assert apply(e, F.UNPACK_LOSSLESS) is e


def test_ids_numbers_and_mine() -> None:
    e = _file()
    out = apply(e, Filters(uid=1000, gid=0))
    assert out is not None and (out.uid, out.gid) == (1000, 0)
    mine = apply(e, Filters(uid="mine", gid="mine"))
    assert mine is not None and (mine.uid, mine.gid) == (os.getuid(), os.getgid())
    assert (e.uid, e.gid) == (7, 8)  # the input is never mutated


def test_mtime_override_zeroes_nanoseconds() -> None:
    out = apply(_file(), Filters(mtime=F.DEFAULT_MTIME))
    assert out is not None and (out.mtime, out.mtime_ns) == (F.DEFAULT_MTIME, 0)


def test_flatten_preset() -> None:
    out = apply(_file(0o4755), F.PACK_FLATTEN)
    assert out is not None
    assert (out.uid, out.gid, out.mtime, out.mtime_ns, out.mode) == (
        1000,
        1000,
        F.DEFAULT_MTIME,
        0,
        0o4755,
    )


def test_sticky_ignore_clears_only_the_sticky_bit() -> None:
    d = Entry("tmp", EntryType.DIR, 0o3777)
    out = apply(d, Filters(sticky="ignore"))
    assert out is not None and out.mode == 0o2777


def test_setid_ignore_and_reject() -> None:
    out = apply(_file(0o6755), Filters(setid="ignore"))
    assert out is not None and out.mode == 0o755
    plain = _file(0o1755)
    assert apply(plain, Filters(setid="reject")) is plain
    with pytest.raises(FilesetError) as caught:
        apply(_file(0o2755), Filters(setid="reject"))
    assert caught.value.category is Category.FILTER_REJECTION
    assert "d/f" in str(caught.value)


@pytest.mark.parametrize("etype", [EntryType.CHAR, EntryType.BLOCK])
def test_dev_rules(etype: EntryType) -> None:
    dev = Entry("dev/x", etype, 0o600, devmajor=1, devminor=3)
    assert apply(dev, Filters(dev="keep")) is dev
    assert apply(dev, Filters(dev="ignore")) is None
    with pytest.raises(FilesetError) as caught:
        apply(dev, Filters(dev="reject"))
    assert caught.value.category is Category.FILTER_REJECTION
    assert "dev/x" in str(caught.value)


def test_dev_rules_leave_fifos_and_files_alone() -> None:
    fifo = Entry("p", EntryType.FIFO, 0o644)
    assert apply(fifo, Filters(dev="reject")) is fifo
    f = _file()
    assert apply(f, Filters(dev="ignore")) is f


def test_conservative_preset_rejects_setid() -> None:
    with pytest.raises(FilesetError) as caught:
        apply(_file(0o4755), F.PACK_CONSERVATIVE)
    assert caught.value.category is Category.FILTER_REJECTION
