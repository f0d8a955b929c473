"""Pack a directory into a gzip'd tar ware, hashing as it goes.

``pack_dir`` walks the tree once: each directory is opened relative to its
parent's fd (``O_NOFOLLOW``, so a directory swapped for a symlink mid-walk
is an error, not an escape), each child is ``lstat``-ed relative to that fd,
and each regular file is read exactly once, its blocks hashed and written
to the tar as they are read. The gzip is done by isal on a second thread
(:mod:`repeatr.fileset.compression`), so packing costs about one read of the
tree plus SHA-384.

What goes in (compat.md "Packing a directory"): children in bytewise name
order; filters applied to every entry; mtime truncated to whole seconds;
no xattrs; names ``./path`` with ``/`` on dirs. Hardlinked files are packed
as independent files (the original does this too, and it keeps every entry
self-contained). **Sockets are skipped**: they cannot be recreated from an
archive and the original skips them. FIFOs and devices are packed, subject
to the ``dev`` filter (devices only).

The same tree with the same filters packs to byte-identical output: the
order is fixed, headers carry no host names or times, and gzip is written
with a zero mtime and no file name.

``hash_dir_exact`` hashes a tree as it is on disk, exactly: mtimes to the
nanosecond, xattrs read (``listxattr``/``getxattr``, never following
symlinks), sockets included. It writes no archive (a tar written by
``pack_dir`` could not carry either), so it names no ware: it is the
cache's check that a shelf still is what its unpack produced
(:attr:`repeatr.fileset.unpack.UnpackResult.strict_id`).

``tree_members`` gives the entries ``pack_dir`` packs as archive members,
without an archive: unpacked (hash verified against the pack's ware ID),
they make what an unpack of the ware makes (how a graph puts a step's
output straight into the cache).

``scan_stream`` (in :mod:`repeatr.fileset.scan`) is re-exported here: the
tree hash of an existing archive, without extracting it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from repeatr.errors import Category, DiskFull, FilesetError, is_no_space
from repeatr.fileset import tarwrite
from repeatr.fileset.compression import BLOCK, open_gzip_writer
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.extract import Budget
from repeatr.fileset.filtering import apply as apply_filters
from repeatr.fileset.limits import Limits
from repeatr.fileset.members import Plain
from repeatr.fileset.treehash import TreeHasher
from repeatr.model.filters import Filters
from repeatr.model.wareid import TAR, TAR_STRICT, WareID

__all__ = ["hash_dir_exact", "pack_dir", "scan_stream", "tree_members"]

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_PROGRESS_STEP = 8 << 20
_DEFAULT_LIMITS = Limits()

_TYPEFLAG = {
    EntryType.FILE: tarwrite.TYPE_FILE,
    EntryType.DIR: tarwrite.TYPE_DIR,
    EntryType.SYMLINK: tarwrite.TYPE_SYMLINK,
    EntryType.FIFO: tarwrite.TYPE_FIFO,
    EntryType.CHAR: tarwrite.TYPE_CHAR,
    EntryType.BLOCK: tarwrite.TYPE_BLOCK,
}


def _entry_type(mode: int, sockets: bool) -> EntryType | None:
    if stat.S_ISREG(mode):
        return EntryType.FILE
    if stat.S_ISDIR(mode):
        return EntryType.DIR
    if stat.S_ISLNK(mode):
        return EntryType.SYMLINK
    if stat.S_ISFIFO(mode):
        return EntryType.FIFO
    if stat.S_ISCHR(mode):
        return EntryType.CHAR
    if stat.S_ISBLK(mode):
        return EntryType.BLOCK
    if sockets and stat.S_ISSOCK(mode):
        return EntryType.SOCKET
    return None  # sockets when packing (and anything unknown) are skipped


def _read_xattrs(target: int | str) -> dict[str, bytes]:
    """Every xattr of ``target``: an fd, or a path whose last component is not followed."""
    follow = isinstance(target, int)  # an fd can't be combined with follow_symlinks=False
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}  # the filesystem has none
        raise
    return {name: os.getxattr(target, name, follow_symlinks=follow) for name in names}


def _sorted_names(fd: int) -> list[str]:
    return sorted(os.listdir(fd), key=os.fsencode)


class _Packer:
    def __init__(
        self,
        root: Path,
        out: BinaryIO | None,
        filters: Filters,
        packtype: str,
        progress: Callable[[int], None] | None,
        *,
        exact: bool = False,
        limits: Limits | None = None,
    ) -> None:
        self.root = root
        #: What unpack will enforce on the ware (None: hash_dir_exact, no archive).
        self.budget = Budget(limits, self._over_limit) if limits is not None else None
        self.out = out
        #: Build tar headers only when there is an archive to write.
        self.emit = out is not None
        #: hash_dir_exact: mtime ns and xattrs as on disk, sockets kept, no filters.
        self.exact = exact
        self.filters = filters
        self.hasher = TreeHasher(packtype)
        self.progress = progress
        self.total = 0
        #: the entry being worked on, for error messages (fd-relative calls
        #: only know the leaf name)
        self.current = "."
        self._next_progress = _PROGRESS_STEP

    # --- one entry ---------------------------------------------------------

    def _entry(self, name: str, st: os.stat_result, etype: EntryType, fd: int, leaf: str) -> (
        Entry | None
    ):
        # Packing truncates to whole seconds (compat); exact keeps the ns.
        mtime, mtime_ns = divmod(st.st_mtime_ns, 1_000_000_000)
        entry = Entry(
            name=name,
            type=etype,
            mode=st.st_mode & 0o7777,
            uid=st.st_uid,
            gid=st.st_gid,
            mtime=mtime,
            mtime_ns=mtime_ns if self.exact else 0,
            size=st.st_size if etype is EntryType.FILE else 0,
        )
        if etype is EntryType.SYMLINK:
            entry.linkname = os.readlink(leaf, dir_fd=fd)
        elif etype is EntryType.CHAR or etype is EntryType.BLOCK:
            entry.devmajor = os.major(st.st_rdev)
            entry.devminor = os.minor(st.st_rdev)
        if self.exact:
            # By the parent's fd, the leaf not followed (as extract.py sets them).
            entry.xattrs = _read_xattrs(fd if name == "." else f"/proc/self/fd/{fd}/{leaf}")
            return entry
        return apply_filters(entry, self.filters)

    def _header(self, entry: Entry) -> bytes:
        if entry.name == ".":
            # rio names a root dir "./" and a root file "." (a single-file ware).
            tar_name = b"./" if entry.type is EntryType.DIR else b"."
        else:
            tar_name = b"./" + os.fsencode(entry.name)
            if entry.type is EntryType.DIR:
                tar_name += b"/"
        return tarwrite.header(
            tar_name,
            entry.mode,
            entry.uid,
            entry.gid,
            entry.size,
            entry.mtime,
            _TYPEFLAG[entry.type],
            os.fsencode(entry.linkname),
            entry.devmajor,
            entry.devminor,
        )

    def _file_blocks(self, entry: Entry, fd: int, leaf: str) -> Iterator[bytes]:
        """Read a file once; yield its header and content, hash it, check its size."""
        size = entry.size
        h = hashlib.sha384()
        ffd = os.open(leaf, _O_FILE, dir_fd=fd)
        try:
            if self.emit:
                yield self._header(entry)
            got = 0
            if size <= BLOCK:
                data = os.read(ffd, size + 1) if size else os.read(ffd, 1)
                got = len(data)
                if got > size:
                    raise self._changed(entry)
                h.update(data)
                yield data
            else:
                while True:
                    data = os.read(ffd, min(BLOCK, size - got + 1))
                    if not data:
                        break
                    got += len(data)
                    if got > size:
                        raise self._changed(entry)
                    h.update(data)
                    yield data
                    self._report(self.total + got)  # big files report as they go
            if got != size:
                raise self._changed(entry)
        finally:
            os.close(ffd)
        self.hasher.add(entry, h.digest())
        self.total += size
        self._report(self.total)
        pad = tarwrite.padding(size)
        if pad:
            yield pad

    def _report(self, done: int) -> None:
        """Progress every _PROGRESS_STEP bytes; the callback may raise to stop the pack."""
        if self.progress is not None and done >= self._next_progress:
            self._next_progress = done + _PROGRESS_STEP
            self.progress(done)

    def _over_limit(self, name: str, what: str, limit: int) -> FilesetError:
        return FilesetError(
            f"cannot pack {self.root}: {name!r} exceeds the {what} limit of {limit}:"
            " repeatr could not unpack the ware",
            category=Category.PACK_INVALID,
            hint="pack, scan and unpack share these limits; keep the output within them",
        )

    def _changed(self, entry: Entry) -> FilesetError:
        return FilesetError(
            f"{self.root / entry.name} changed size while it was being packed",
            category=Category.PACK_INVALID,
            hint="pack only trees that nothing else is writing to",
        )

    # --- the walk ------------------------------------------------------------

    def walk(self, root_st: os.stat_result) -> Generator[tuple[Entry, int, str]]:
        """Every entry in pack order, filtered (and admitted), with its parent's fd and
        its leaf name there (to read a file by); the fds are open until the next step.

        The root's fd is its own for a directory, its parent's for a single file.
        """
        if stat.S_ISREG(root_st.st_mode):
            yield from self._walk_file(root_st)
            return
        root_fd = os.open(self.root, _O_DIR)
        stack: list[tuple[int, str, Iterator[str]]] = []
        sockets = self.exact
        admit = self.budget.admit if self.budget is not None else None
        try:
            entry = self._entry(".", root_st, EntryType.DIR, root_fd, ".")
            if entry is not None:
                if admit is not None:
                    admit(entry)
                yield entry, root_fd, "."
            stack.append((root_fd, "", iter(_sorted_names(root_fd))))
            while stack:
                fd, prefix, names = stack[-1]
                for leaf in names:
                    self.current = prefix + leaf
                    st = os.lstat(leaf, dir_fd=fd)
                    etype = _entry_type(st.st_mode, sockets)
                    if etype is None:
                        continue
                    name = prefix + leaf
                    entry = self._entry(name, st, etype, fd, leaf)
                    if entry is not None and admit is not None:
                        admit(entry)  # before a dir is opened or a file read
                    if etype is EntryType.DIR:
                        # A dir is never dropped by filters (only devices are).
                        assert entry is not None
                        yield entry, fd, leaf
                        child = os.open(leaf, _O_DIR, dir_fd=fd)
                        try:
                            children = iter(_sorted_names(child))
                        except BaseException:
                            os.close(child)
                            raise
                        stack.append((child, name + "/", children))
                        break
                    if entry is not None:
                        yield entry, fd, leaf
                else:
                    stack.pop()
                    if fd != root_fd:
                        os.close(fd)
        finally:
            for fd, _prefix, _names in stack:
                if fd != root_fd:
                    os.close(fd)
            os.close(root_fd)

    def _walk_file(self, root_st: os.stat_result) -> Iterator[tuple[Entry, int, str]]:
        """A single-file fileset: one entry, the root ``.``, a regular file."""
        parent_fd = os.open(self.root.parent, _O_DIR)
        try:
            # The fd is the parent's: xattrs (exact) are read by name below.
            leaf = self.root.name
            st = os.lstat(leaf, dir_fd=parent_fd)
            if (st.st_dev, st.st_ino) != (root_st.st_dev, root_st.st_ino):
                raise FilesetError(
                    f"{self.root} was replaced while it was being packed",
                    category=Category.PACK_INVALID,
                )
            entry = self._entry(".", st, EntryType.FILE, parent_fd, leaf)
            assert entry is not None  # only devices are dropped by filters
            if self.exact:  # _entry read the root's by fd, here the parent's
                entry.xattrs = _read_xattrs(f"/proc/self/fd/{parent_fd}/{leaf}")
            yield entry, parent_fd, leaf
        finally:
            os.close(parent_fd)

    def run(self, root_st: os.stat_result) -> Iterator[bytes]:
        emit = self.emit
        for entry, fd, leaf in self.walk(root_st):
            if entry.type is EntryType.FILE:
                yield from self._file_blocks(entry, fd, leaf)
            else:
                self.hasher.add(entry, None)
                if emit:
                    yield self._header(entry)
        if emit:
            yield tarwrite.END_OF_ARCHIVE


def _root_stat(path: Path) -> os.stat_result | None:
    """lstat of the tree to pack: None when it does not exist.

    A directory, or a regular file (a single-file fileset, as rio packs
    one); anything else is an error.
    """
    try:
        root_st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FilesetError(
            f"cannot pack {path}: {exc.strerror}", category=Category.PACK_INVALID
        ) from exc
    if not (stat.S_ISDIR(root_st.st_mode) or stat.S_ISREG(root_st.st_mode)):
        raise FilesetError(
            f"cannot pack {path}: it is not a directory or a regular file",
            category=Category.PACK_INVALID,
        )
    return root_st


def _walk(packer: _Packer, root_st: os.stat_result, out: BinaryIO | None) -> WareID:
    try:
        if out is None:
            for _chunk in packer.run(root_st):
                pass
        else:
            gz = open_gzip_writer(out)
            try:
                write = gz.write
                for chunk in packer.run(root_st):
                    write(chunk)
            finally:
                gz.close()
    except OSError as exc:
        if is_no_space(exc):  # writing the archive, not reading the tree
            name = getattr(out, "name", None)
            where = name if isinstance(name, str) else "its output (a temp file in $TMPDIR)"
            raise DiskFull.of(exc, where, f"write the packed {packer.root} to") from exc
        raise FilesetError(
            f"cannot pack {packer.root / packer.current}: {exc.strerror or exc}",
            category=Category.PACK_INVALID,
        ) from exc
    if packer.progress is not None:
        packer.progress(packer.total)
    return packer.hasher.ware_id()


def pack_dir(
    path: Path,
    out: BinaryIO | None,
    *,
    filters: Filters,
    packtype: str = TAR,
    progress: Callable[[int], None] | None = None,
    limits: Limits = _DEFAULT_LIMITS,
) -> WareID:
    """Pack ``path`` as a gzip'd tar into ``out`` (None: hash only); return its ware ID.

    A path that does not exist gives ``<packtype>:-`` and writes nothing; a
    regular file packs as a single-file ware (one entry, the root, named
    ``.`` in the tar, as rio writes it).
    ``limits`` are the ones unpack and scan enforce (the same
    :class:`~repeatr.fileset.extract.Budget`): a tree over them is refused
    here, naming the entry and the limit, rather than packed into a ware
    that could never be unpacked.
    ``progress`` gets the bytes packed so far every 8 MiB, also inside a big
    file; whatever it raises stops the pack (how a run cancels one).
    Raises ``FilesetError``: FILTER_REJECTION naming the entry a filter
    rejects, PACK_INVALID when ``path`` is neither a directory nor a regular
    file, cannot be read, or is over a limit. ``out`` is not closed.
    """
    path = Path(path)
    root_st = _root_stat(path)
    if root_st is None:
        return WareID.from_digest(packtype, None)
    packer = _Packer(path, out, filters, packtype, progress, limits=limits)
    return _walk(packer, root_st, out)


def hash_dir_exact(
    path: Path,
    *,
    packtype: str = TAR_STRICT,
    progress: Callable[[int], None] | None = None,
) -> WareID:
    """The tree hash of ``path`` exactly as it is on disk; writes nothing.

    Unlike ``pack_dir`` (whose hash must match the tar it writes): mtimes
    keep their nanoseconds, xattrs are read, sockets are hashed, and no
    filters apply. For a tree just made by ``unpack_stream`` this equals its
    ``strict_id`` (and, in the ware's packtype, its ``filtered_id``) on a filesystem
    that keeps nanosecond mtimes (tmpfs, ext4, xfs, btrfs) and adds no
    xattrs of its own (e.g. SELinux labels). Each entry costs one more
    syscall (``listxattr``) than ``pack_dir``.

    A path that does not exist gives ``<packtype>:-``. Raises
    ``FilesetError(PACK_INVALID)`` when ``path`` is not a directory or
    cannot be read.
    """
    path = Path(path)
    root_st = _root_stat(path)
    if root_st is None:
        return WareID.from_digest(packtype, None)
    packer = _Packer(path, None, Filters(), packtype, progress, exact=True)
    return _walk(packer, root_st, None)


@contextmanager
def tree_members(
    path: Path, *, filters: Filters, limits: Limits = _DEFAULT_LIMITS
) -> Iterator[Iterator[Plain]]:
    """The entries ``pack_dir(path, filters=filters)`` packs, as archive members.

    What the ware's archive would give, without writing one: unpacking these
    (:func:`repeatr.fileset.unpack.unpack_members`, which verifies the tree
    hash against the ware ID the pack gave) makes the tree an unpack of the
    ware would make, on the same code path. Each file is read when its
    member's content is (unpack does so before taking the next member); its
    directory's fd stays open until then. A tree changed since it was packed
    hashes differently: the unpack refuses it (HASH_MISMATCH).
    """
    path = Path(path)
    root_st = _root_stat(path)
    if root_st is None:
        raise FilesetError(f"cannot read {path}: it does not exist", category=Category.PACK_INVALID)
    packer = _Packer(path, None, filters, TAR, None, limits=limits)
    walk = packer.walk(root_st)

    def members() -> Iterator[Plain]:
        for entry, fd, leaf in walk:
            if entry.type is EntryType.FILE:
                yield Plain(entry, _content(fd, leaf, entry.size))
            else:
                yield Plain(entry)

    try:
        yield members()
    finally:
        walk.close()  # closes the directories still open


def _content(dir_fd: int, leaf: str, size: int) -> Iterator[bytes]:
    """A file's first ``size`` bytes, in blocks (opened when first iterated)."""
    ffd = os.open(leaf, _O_FILE, dir_fd=dir_fd)
    try:
        left = size
        while left > 0:
            data = os.read(ffd, min(BLOCK, left))
            if not data:
                return
            left -= len(data)
            yield data
    finally:
        os.close(ffd)


def scan_stream(
    stream: BinaryIO, *, packtype: str = TAR, limits: Limits = _DEFAULT_LIMITS
) -> WareID:
    """:func:`repeatr.fileset.scan.scan_stream`, imported only when called.

    Packing must not pay for the archive reader (libarchive) at import time:
    a run that packs outputs never reads an archive.
    """
    from repeatr.fileset.scan import scan_stream as scan

    return scan(stream, packtype=packtype, limits=limits)

