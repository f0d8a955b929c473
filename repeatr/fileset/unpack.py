"""Unpack a ware stream into a directory, verifying its hash before anything is visible.

One pass over the stream: each member is counted against the limits, hashed
as the archive has it (the ID to verify), filtered, hashed again as it will
be on disk, and written by :class:`~repeatr.fileset.extract.SafeWriter`. A
file's content is read once: it is hashed while it is written.

Everything lands in a fresh ``.repeatr-tmp-*`` directory beside ``dest``
(same filesystem, so the final rename is atomic) and only becomes ``dest``
once the whole archive is written and the hash matches. On any failure,
including Ctrl-C, the temp dir is removed: a half-written or unverified tree
is never visible under ``dest``.

Three hashes come out (compat.md "Tree hash" step 6):

- ``ware_id``: before filters, in the requested packtype: what was verified.
- ``filtered_id``: after filters, same packtype: what is on disk (for
  ``tar-strict``, with symlink modes as stored: see ``strict_id``). Directories
  the archive only implies are created with the filtered version of the
  inferred metadata (0755, 0:0, 2010-01-01), and hashed that way, so this ID
  describes the tree exactly (e.g. with ``uid=mine`` they are ours).
- ``strict_id``: after filters, ``tar-strict``: covers symlinks, fifos and
  devices too, which the original's ``tar`` hash skips. It is the hash of
  the tree as it lands on disk, so it equals
  :func:`~repeatr.fileset.pack.hash_dir_exact` of ``dest`` (the cache
  records it instead of re-reading the tree): where Linux cannot store what
  the archive says, it hashes what is stored. The one case is a symlink's
  mode, always 0777 on disk whatever the archive holds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from repeatr.errors import Category, DiskFull, FilesetError, is_no_space
from repeatr.fileset import filtering
from repeatr.fileset.admit import Admission
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import SafeWriter, inferred_dir
from repeatr.fileset.limits import Limits
from repeatr.fileset.members import ArchiveMember
from repeatr.fileset.reader import read_archive
from repeatr.fileset.treehash import TreeHasher
from repeatr.linux.rmtree import remove_tree
from repeatr.model.filters import Filters
from repeatr.model.wareid import GIT, TAR, TAR_STRICT, ZIP, WareID

__all__ = ["TMP_PREFIX", "UnpackResult", "unpack_members", "unpack_stream"]

#: Temp dirs beside the destination start with this; anything so named is
#: debris from a crash and safe to delete.
TMP_PREFIX = ".repeatr-tmp-"
#: Call ``progress`` at most once per this many content bytes.
_PROGRESS_STEP = 4 << 20

_DEFAULT_LIMITS = Limits()
#: The mode of every symlink on Linux (there is no lchmod).
_SYMLINK_MODE = 0o777


#: Where a single-file ware's one file is written inside the temp dir, before
#: it is renamed to ``dest`` itself.
_ROOT_FILE = "single-file"


@dataclass(frozen=True)
class UnpackResult:
    ware_id: WareID  # hash before filters (what was verified)
    filtered_id: WareID  # hash after filters (what is on disk)
    strict_id: WareID  # TAR_STRICT hash after filters: covers every entry on disk
    entries: int
    bytes: int  # content bytes written
    #: The ware's root is one regular file: ``dest`` is that file.
    single_file: bool = False


def unpack_stream(
    stream: BinaryIO,
    dest: Path,
    *,
    expected: WareID | None,
    filters: Filters,
    limits: Limits = _DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> UnpackResult:
    """Unpack the archive in ``stream`` (a tar, or a zip for a ``zip:`` ware) into ``dest``.

    See :func:`unpack_members`.
    """
    if expected is not None and expected.packtype == ZIP:
        from repeatr.fileset.zipread import read_zip

        members: AbstractContextManager[Iterable[ArchiveMember]] = read_zip(stream)
    else:
        members = read_archive(stream)
    return unpack_members(
        members,
        dest,
        expected=expected,
        filters=filters,
        limits=limits,
        progress=progress,
        checkpoint=checkpoint,
    )


def unpack_members(
    members: AbstractContextManager[Iterable[ArchiveMember]],
    dest: Path,
    *,
    expected: WareID | None,
    filters: Filters,
    limits: Limits = _DEFAULT_LIMITS,
    progress: Callable[[int], None] | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> UnpackResult:
    """Unpack ``members`` into ``dest`` (which must not exist; its parent must).

    ``members`` is entered once (a tar: :func:`~repeatr.fileset.reader.read_archive`,
    a zip, a git commit's tree). The tree hash is verified against
    ``expected`` (with its packtype; a ``git:`` ID names a commit that git
    has verified, so it is not re-hashed).

    A single-file ware (its root is a regular file) makes ``dest`` that file.

    ``checkpoint`` is called before each member and after each block of
    content read: it raises to stop (a cancelled run passes
    ``anyio.from_thread.check_cancelled``); the temp dir is removed as for
    any failure.

    Raises ``FilesetError``: HASH_MISMATCH when the archive is not
    ``expected``, WARE_CORRUPT for a malformed or hostile archive,
    FILTER_REJECTION when a filter refuses an entry, INOPERABLE_PATH when
    ``dest`` can't be written.
    """
    dest = Path(dest)
    if os.path.lexists(dest):
        raise FilesetError(
            f"cannot unpack into {os.fspath(dest)!r}: it already exists",
            category=Category.INOPERABLE_PATH,
            hint="unpack into a path that does not exist yet",
        )
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest.parent))
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull.of(exc, dest.parent, "create a temp dir to unpack into") from exc
        raise FilesetError(
            f"cannot unpack into {os.fspath(dest)!r}: cannot create a temp dir beside it:"
            f" {exc.strerror or exc}",
            category=Category.INOPERABLE_PATH,
        ) from exc
    try:
        result = _unpack_into(members, tmp, expected, filters, limits, progress, checkpoint)
        # Not atomic against a racing creator of dest (rename(2) replaces an
        # empty dir); callers serialise on a per-ware lock.
        if os.path.lexists(dest):
            raise FilesetError(
                f"cannot unpack into {os.fspath(dest)!r}: it appeared while unpacking",
                category=Category.INOPERABLE_PATH,
            )
        try:
            os.rename(tmp / _ROOT_FILE if result.single_file else tmp, dest)
        except OSError as exc:
            raise FilesetError(
                f"cannot move the unpacked tree to {os.fspath(dest)!r}: {exc.strerror or exc}",
                category=Category.INOPERABLE_PATH,
            ) from exc
    except BaseException:
        remove_tree(tmp)  # best effort: the error that got us here is the one to raise
        raise
    if result.single_file:
        remove_tree(tmp)
    return result


def _unpack_into(
    source: AbstractContextManager[Iterable[ArchiveMember]],
    root: Path,
    expected: WareID | None,
    filters: Filters,
    limits: Limits,
    progress: Callable[[int], None] | None,
    checkpoint: Callable[[], None] | None = None,
) -> UnpackResult:
    packtype = expected.packtype if expected is not None else TAR
    # zip and git wares are hashed (filtered, strict IDs) as tar filesets are.
    pre = TreeHasher(TAR_STRICT if packtype == TAR_STRICT else TAR)
    # Hashing is a third of the cost of an unpack: skip hashers whose result
    # is already known. With no-op filters the post-filter hash is the
    # pre-filter one (implied dirs included: they are the inferred ones).
    noop = filtering.is_noop(filters)
    post = pre if noop else TreeHasher(pre.packtype)
    strict = post if pre.packtype == TAR_STRICT else TreeHasher(TAR_STRICT)
    post_hashers: list[TreeHasher] = []
    for hasher in (post, strict):
        if hasher is not pre and all(hasher is not h for h in post_hashers):
            post_hashers.append(hasher)
    apply = filtering.apply
    single_file = False

    def implied(name: str) -> Entry:
        entry = apply(inferred_dir(name), filters) or inferred_dir(name)
        if name == "." and single_file:
            return entry  # the temp dir around a single-file ware: not part of it
        for hasher in post_hashers:
            hasher.add(entry, None)
        return entry

    # Symlinks whose archived mode can't be stored: their on-disk form, put
    # into the strict hash once every other ID is taken (the strict hasher
    # may be shared with them; ``add`` replaces an entry of the same name).
    disk_forms: dict[str, Entry] = {}
    admission = Admission(limits)
    budget = admission.budget
    admit = admission.admit
    file_t = EntryType.FILE
    symlink_t = EntryType.SYMLINK
    sha384 = hashlib.sha384
    entries = 0
    done = 0
    reported = 0
    with (
        SafeWriter(root, limits=limits, implied=implied, budget=budget) as writer,
        source as members,
    ):
        write = writer.write
        for member in members:
            if checkpoint is not None:
                checkpoint()
            entry = member.entry
            admit(entry)  # what scan refuses too: limits, hardlinks, type changes
            entries += 1
            if single_file:
                raise FilesetError(
                    f"corrupt ware: archive member {entry.name!r} follows a root that is a file",
                    category=Category.WARE_CORRUPT,
                )
            out = apply(entry, filters)
            digest: bytes | None = None
            if entry.type is file_t:
                h = sha384()
                blocks = _tee(member.blocks(), h.update, checkpoint)
                if entry.name == "." and out is not None:
                    if entries > 1:
                        raise FilesetError(
                            "corrupt ware: the archive's root is a file, after other members",
                            category=Category.WARE_CORRUPT,
                        )
                    # A single-file ware: written inside the temp dir, renamed to dest.
                    single_file = True
                    write(dataclasses.replace(out, name=_ROOT_FILE), blocks)
                elif out is not None:
                    write(out, blocks)
                else:  # pragma: no cover - no filter drops files today
                    for _ in blocks:
                        pass
                digest = h.digest()
                done += entry.size
                if progress is not None and done - reported >= _PROGRESS_STEP:
                    progress(done)
                    reported = done
            elif out is not None:
                write(out)
                if out.type is symlink_t:
                    # Later duplicates replace earlier ones (the writer
                    # refuses a change of type), here as on disk.
                    if out.mode != _SYMLINK_MODE:
                        disk_forms[out.name] = dataclasses.replace(out, mode=_SYMLINK_MODE)
                    else:
                        disk_forms.pop(out.name, None)
            pre.add(entry, digest)
            if out is not None:
                for hasher in post_hashers:
                    hasher.add(out, digest)
        writer.finish()
    if progress is not None and done != reported:
        progress(done)
    ware_id = WareID(packtype, pre.ware_id().hash)
    if packtype == GIT:
        assert expected is not None
        ware_id = expected  # git checked every object against the commit's hash
    elif expected is not None and ware_id != expected:
        raise FilesetError(
            f"hash mismatch: expected {expected}, the ware contains {ware_id}",
            category=Category.HASH_MISMATCH,
            hint="the warehouse holds different content under this ID",
        )
    filtered_id = ware_id if post is pre else WareID(packtype, post.ware_id().hash)
    if packtype == GIT:
        filtered_id = ware_id  # rio reports the commit, whatever the filters
    if disk_forms:
        for disk_form in disk_forms.values():
            strict.add(disk_form, None)
        strict_id = strict.ware_id()
        if strict is post and packtype == TAR_STRICT:  # the filtered ID describes the disk too
            filtered_id = strict_id
    else:
        strict_id = filtered_id if strict is post else strict.ware_id()
    return UnpackResult(
        ware_id=ware_id,
        filtered_id=filtered_id,
        strict_id=strict_id,
        entries=entries,
        bytes=done,
        single_file=single_file,
    )


def _tee(
    blocks: Iterable[bytes],
    update: Callable[[bytes], None],
    checkpoint: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    for block in blocks:
        update(block)
        if checkpoint is not None:
            checkpoint()
        yield block
