"""Fetch a ware from its sources and unpack it: the one path for every packtype.

``tar``/``tar-strict``/``zip`` wares are files in warehouses
(:func:`repeatr.warehouse.open_from_sources`); ``git`` wares are commits in
git repositories (:mod:`repeatr.warehouse.gitrepo`). The cache, ``repeatr
unpack`` and ``rio unpack`` all call :func:`unpack_ware`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from repeatr.fileset.limits import Limits
from repeatr.fileset.unpack import UnpackResult, unpack_members, unpack_stream
from repeatr.model.filters import Filters
from repeatr.model.wareid import GIT, WareID

__all__ = ["unpack_ware"]


def unpack_ware(
    ware: WareID,
    sources: Sequence[str],
    dest: Path,
    *,
    filters: Filters,
    limits: Limits | None = None,
    progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
    on_source: Callable[[str], None] | None = None,
) -> UnpackResult:
    """Fetch ``ware`` from the first of ``sources`` that has it; unpack it into ``dest``.

    ``on_source`` is told which source is used (warehouse wares). Raises what
    :func:`~repeatr.fileset.unpack.unpack_stream` and the warehouses raise.
    """
    limits = limits or Limits()
    if ware.packtype == GIT:
        from repeatr.warehouse.gitrepo import read_git

        # The bare repository lives beside dest (same filesystem) until the unpack ends.
        with tempfile.TemporaryDirectory(prefix=".repeatr-git-", dir=dest.parent) as scratch:
            return unpack_members(
                read_git(ware, sources, Path(scratch) / "git", checkpoint),
                dest,
                expected=ware,
                filters=filters,
                limits=limits,
                progress=progress,
                checkpoint=checkpoint,
            )
    from repeatr.warehouse import open_from_sources

    with open_from_sources(ware, sources, checkpoint=checkpoint) as (url, stream):
        if on_source is not None:
            on_source(url)
        return unpack_stream(
            stream,
            dest,
            expected=ware,
            filters=filters,
            limits=limits,
            progress=progress,
            checkpoint=checkpoint,
        )
