"""Copy a ware between warehouses, verifying its hash while it streams.

The bytes are copied exactly (the target gets the same archive, not a
re-pack), and the tree hash is computed from the same bytes as they pass, so
one read of the source both copies and verifies. The copy goes to the
target's temp file and is committed only if the hash matches the ware ID:
a corrupt or mislabelled source never lands in a warehouse, where its name
would vouch for content it does not have.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from repeatr.errors import Category, RepeatrError, UsageError, WarehouseError
from repeatr.fileset.pack import scan_stream
from repeatr.model.wareid import GIT, WareID
from repeatr.warehouse import Warehouse, open_from_sources, redact, warehouse_for

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK = 1 << 16
#: What ``open_ware`` on the target may say that still lets us try to save.
_ABSENT = (Category.WARE_NOT_FOUND, Category.WAREHOUSE_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class MirrorResult:
    """What ``mirror`` did: ``source`` is None when the target already had the ware."""

    ware: WareID
    target: str
    source: str | None
    bytes: int

    @property
    def already_present(self) -> bool:
        return self.source is None

    def __bool__(self) -> bool:
        """True when something was copied, so ``if mirror(...):`` reads naturally."""
        return self.source is not None


class _Tee(io.RawIOBase):
    """Reads from ``source``; every byte read is also written to ``sink``, once, in order."""

    def __init__(self, source: BinaryIO, sink: BinaryIO, target: str) -> None:
        super().__init__()
        self._source = source
        self._sink = sink
        self._target = target
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        data = self._source.read(len(view))
        n = len(data)
        view[:n] = data
        try:
            self._sink.write(data)
        except OSError as exc:
            raise WarehouseError(
                f"cannot save to warehouse {self._target}: {exc.strerror or exc}",
                category=Category.WAREHOUSE_UNWRITABLE,
            ) from exc
        self.count += n
        return n


def _target_has(target: Warehouse, ware: WareID) -> bool:
    """Whether ``target`` already holds ``ware``.

    In a content-addressed warehouse presence is proof. A ``file://`` target
    holds whatever ware was last saved there, so its content is hashed: a
    different or unreadable file is overwritten, not trusted.
    """
    try:
        with target.open_ware(ware) as stream:
            if target.content_addressed:
                return True
            try:
                return scan_stream(stream, packtype=ware.packtype) == ware
            except RepeatrError:
                return False
    except WarehouseError as exc:
        if exc.category in _ABSENT:
            return False
        raise


def mirror(ware: WareID, sources: Sequence[str], target_url: str) -> MirrorResult:
    """Copy ``ware`` from the first of ``sources`` that has it to ``target_url``.

    Does nothing if the target already has it. Errors: those of
    ``open_from_sources``; WAREHOUSE_UNWRITABLE for the target; WARE_CORRUPT
    if the source's bytes are not an archive; HASH_MISMATCH if they are
    another fileset. On any error nothing is committed and no temp file is
    left. The first source that has the ware is the only one read: a bad
    copy there is an error to fix, not something to paper over.
    """
    if ware.packtype == GIT:
        raise UsageError(
            f"cannot mirror {ware}: git wares live in git repositories, not warehouses",
            hint="copy the repository with git (git clone --mirror, git push --mirror)",
        )
    target = warehouse_for(target_url)
    if _target_has(target, ware):
        return MirrorResult(ware, target_url, None, 0)
    with open_from_sources(ware, sources) as (source_url, stream), target.start_save() as save:
        tee = _Tee(stream, save.file, redact(target_url))
        with io.BufferedReader(tee, _CHUNK) as teed:
            try:
                got = scan_stream(teed, packtype=ware.packtype)
            except RepeatrError as exc:
                if exc.category is not Category.WARE_CORRUPT:
                    raise
                raise WarehouseError(
                    f"ware {ware} from {redact(source_url)} is corrupt: {exc}",
                    category=Category.WARE_CORRUPT,
                ) from exc
            # The scan may stop at the tar end marker; copy the rest (gzip
            # trailer, padding) so the target is byte-identical.
            while teed.read(_CHUNK):
                pass
        if got != ware:
            raise WarehouseError(
                f"ware from {redact(source_url)} hashes to {got}, not {ware};"
                f" nothing was saved to {redact(target_url)}",
                category=Category.HASH_MISMATCH,
            )
        save.commit(ware)
        return MirrorResult(ware, target_url, source_url, tee.count)
