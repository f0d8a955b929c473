"""A single-file ware in the cache: its shelf is a file, listed, verified, held and collected."""

from __future__ import annotations

import os
from pathlib import Path

from repeatr.cache import Cache
from repeatr.fileset.pack import pack_dir
from repeatr.model.filters import Filters
from repeatr.warehouse import warehouse_for


def test_file_shelf_lifecycle(tmp_path: Path, root: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(src, 0o755)
    url = f"file://{tmp_path / 'tool.tgz'}"
    with warehouse_for(url).start_save() as session:
        ware = pack_dir(src, session.file, filters=Filters())
        session.commit(ware)
    cache = Cache(root)
    with cache.shelf(ware, [url]) as handle:
        assert handle.unpacked and handle.path.is_file()
        assert handle.path.read_bytes() == src.read_bytes()
    # Found again (not unpacked a second time), listed with its size, intact.
    with cache.shelf(ware, [url]) as handle:
        assert not handle.unpacked
    (listed,) = cache.ls()
    assert listed.ware == ware and listed.size == len(src.read_bytes())
    assert cache.verify() == []
    # A changed file is found; gc removes the shelf.
    handle.path.chmod(0o700)
    assert [p.ware for p in cache.verify()] == [ware]
    cache.gc(0)
    assert cache.ls() == [] and not os.path.lexists(handle.path)
