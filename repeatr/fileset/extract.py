"""Safe extraction: every write is directory-fd-relative, no-follow, create-exclusive.

``tarfile.extractall`` is not a security boundary, so every write here is
ours. The rules, and why:

- Names are split into components and walked one at a time with
  ``openat(parent_fd, component, O_DIRECTORY|O_NOFOLLOW)``: a component that
  is a symlink (from the archive or already on disk) fails to open as a
  directory instead of being followed out of the root.
- Leaves are created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``, ``mkdirat``,
  ``symlinkat``, ``mknodat``), so nothing that exists is ever written through.
  On ``EEXIST`` we look (``fstatat`` no-follow): the same type is a later
  duplicate and replaces the earlier one (a directory only gets new
  metadata); another type is rejected.
- Directories are never removed once made, so a cached directory fd stays the
  directory it was opened as. The cache (keyed by relative path, LRU, bounded
  so a wide tree can't exhaust file descriptors) keeps a file at the same
  syscalls GNU tar makes: ``openat``, ``write``, ``fchown``, ``fchmod``,
  ``futimens``, ``close``; ``fchown`` is skipped when the file is already
  ours to the id, ``fchmod`` when the umask can't have changed the mode.
- Ownership before mode (``chown`` clears setid bits); xattrs between the two
  (``chown`` clears ``security.capability``, and a read-only mode would block
  setting ``user.*`` as non-root). Directories are created 0700 and get their
  real owner, mode and mtime in :meth:`SafeWriter.finish`, deepest first, so
  a read-only directory in an archive can still be filled and a child's
  creation doesn't disturb its parent's mtime.
- xattrs are set through the open fd for files and directories; for symlinks
  and special files (which have no openable fd) through
  ``/proc/self/fd/<parent fd>/<name>`` with ``follow_symlinks=False``, which
  resolves the parent by fd, never by path.

Limits (:class:`~repeatr.fileset.limits.Limits`) are enforced per entry, before
anything is created, by :class:`Budget`, which unpack also uses on entries a
filter drops.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from repeatr.errors import Category, DiskFull, FilesetError, RepeatrError, is_no_space
from repeatr.fileset.entry import Entry, EntryType
from repeatr.fileset.limits import Limits
from repeatr.fileset.sparse import SparseWriter
from repeatr.model.filters import DEFAULT_MTIME
from repeatr.model.units import format_size

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Directory fds kept open. Well below the usual 1024 soft NOFILE limit; a
#: depth-first archive needs about its depth.
_FD_CACHE_SIZE = 128

_NODE_TYPES = {
    EntryType.FIFO: stat.S_IFIFO,
    EntryType.SOCKET: stat.S_IFSOCK,
    EntryType.CHAR: stat.S_IFCHR,
    EntryType.BLOCK: stat.S_IFBLK,
}
_ENTRY_TYPE_OF_MODE = {
    stat.S_IFREG: EntryType.FILE,
    stat.S_IFDIR: EntryType.DIR,
    stat.S_IFLNK: EntryType.SYMLINK,
    stat.S_IFIFO: EntryType.FIFO,
    stat.S_IFSOCK: EntryType.SOCKET,
    stat.S_IFCHR: EntryType.CHAR,
    stat.S_IFBLK: EntryType.BLOCK,
}
TYPE_WORDS = {
    EntryType.FILE: "file",
    EntryType.DIR: "directory",
    EntryType.SYMLINK: "symlink",
    EntryType.HARDLINK: "hardlink",
    EntryType.FIFO: "fifo",
    EntryType.SOCKET: "socket",
    EntryType.CHAR: "char device",
    EntryType.BLOCK: "block device",
}


def inferred_dir(name: str) -> Entry:
    """A directory the archive implies but doesn't hold (compat.md "Tree hash" step 4)."""
    return Entry(name=name, type=EntryType.DIR, mode=0o755, mtime=DEFAULT_MTIME)


def _corrupt(name: str, why: str) -> FilesetError:
    return FilesetError(f"archive member {name!r}: {why}", category=Category.WARE_CORRUPT)


def _limit(name: str, what: str, value: int) -> FilesetError:
    return FilesetError(
        f"archive member {name!r}: exceeds the {what} limit of {value}",
        category=Category.WARE_CORRUPT,
        hint="the archive may be a decompression or archive bomb",
    )


class Budget:
    """Counts entries and bytes against :class:`Limits`; raises naming the limit.

    The one place the limits are checked: unpack and scan (through
    :mod:`repeatr.fileset.admit`) and pack use it. ``exceeded(name, what,
    limit)`` makes the error: an archive member's by default; pack names the
    path it cannot pack.
    """

    __slots__ = ("_bytes", "_disk", "_entries", "_limit", "_max_name_chars", "limits")

    def __init__(
        self, limits: Limits, exceeded: Callable[[str, str, int], FilesetError] | None = None
    ) -> None:
        self.limits = limits
        self._limit = exceeded or _limit
        self._entries = 0
        self._bytes = 0
        self._disk = 0
        # A str of n characters encodes to at most 4n bytes: skip encoding
        # names that can't be too long.
        self._max_name_chars = limits.max_name_length // 4

    def admit(self, entry: Entry) -> None:
        """Count one entry (and its declared size) before anything is done with it."""
        limits = self.limits
        name = entry.name
        self._entries += 1
        if self._entries > limits.max_entries:
            raise self._limit(name, "entry count", limits.max_entries)
        if (
            len(name) > self._max_name_chars
            and len(name.encode("utf-8", "surrogateescape")) > limits.max_name_length
        ):
            raise self._limit(name, "name length (bytes)", limits.max_name_length)
        if name.count("/") + 1 > limits.max_depth:
            raise self._limit(name, "depth (path components)", limits.max_depth)
        if entry.size:
            self.add_bytes(name, entry.size)

    def add_bytes(self, name: str, count: int) -> None:
        self._bytes += count
        if self._bytes > self.limits.max_bytes:
            raise self._limit(name, "total size (bytes)", self.limits.max_bytes)

    def add_disk(self, name: str, count: int) -> None:
        """Count ``count`` bytes about to be allocated on disk (holes are not)."""
        self._disk += count
        limits = self.limits
        if self._disk > limits.max_disk:
            raise DiskFull(
                f"archive member {name!r}: the ware would write more than"
                f" {format_size(limits.max_disk)} to disk, the limit for one ware"
                + (f" ({limits.max_disk_source})" if limits.max_disk_source else ""),
                hint="raise it with --ware-disk-limit (env REPEATR_WARE_DISK_LIMIT)"
                " if the ware is what you expect; it may be a decompression bomb",
            )


def _split(name: str) -> tuple[str, str]:
    """(parent, basename) of a member name; rejects escapes (defence in depth).

    The reader already cleans and rejects these; the writer is the boundary,
    so it checks again rather than trust its caller.
    """
    if not name or name.startswith("/"):
        raise _corrupt(name, "absolute or empty names are not allowed")
    if "\0" in name:
        raise _corrupt(name, "names may not contain NUL bytes")
    parts = name.split("/")
    if ".." in parts:
        raise _corrupt(name, "'..' escapes the fileset root")
    if "" in parts or "." in parts:
        parts = [p for p in parts if p not in ("", ".")]
        if not parts:
            return "", "."
    if len(parts) == 1:
        return "", parts[0]
    return "/".join(parts[:-1]), parts[-1]


def _umask() -> int | None:
    """This process's umask, plus the setid/sticky bits (which also need fchmod).

    Read from /proc (Linux >= 4.7): ``os.umask`` can only be read by setting it,
    which races with other threads. None when unknown: then always fchmod.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8) | 0o7000
    except (OSError, ValueError, IndexError):
        pass
    return None


def _ns(entry: Entry) -> int:
    return entry.mtime * 1_000_000_000 + entry.mtime_ns


class SafeWriter:
    """Writes entries under ``root``; nothing is ever written outside it.

    ``limits`` are checked per entry before anything is created (or by the
    caller, with a shared ``budget``). ``implied`` gives the metadata of a
    directory the archive implies but doesn't hold (missing parents, and the
    root when there is no ``./`` entry); unpack passes one that applies the
    filters, so what lands on disk is what its post-filter hash says.
    """

    def __init__(
        self,
        root: Path,
        *,
        limits: Limits,
        implied: Callable[[str], Entry] = inferred_dir,
        budget: Budget | None = None,
    ) -> None:
        self.root = root
        # A caller that passes its own budget admits entries itself (so the
        # ones a filter drops count too); the writer then only counts bytes.
        self._admit = budget is None
        self._budget = budget if budget is not None else Budget(limits)
        self._implied = implied
        self._root_fd = os.open(root, _DIR_FLAGS)
        # Who owns what we create, when we can know it without asking: files
        # get our euid and, whether the filesystem uses our egid or the
        # parent's gid (setgid dirs, the grpid mount option), the gid of our
        # own directories, which keep the root's gid until finish() because
        # their chown is deferred. So when the root's gid is our egid every
        # new node is (euid, egid) and fchown to that can be skipped.
        root_gid = os.fstat(self._root_fd).st_gid
        self._owner: tuple[int, int] | None = (
            (os.geteuid(), os.getegid()) if root_gid == os.getegid() else None
        )
        self._umask = _umask()
        self._fds: dict[str, int] = {"": self._root_fd}
        self._last_parent = ""
        self._last_fd = self._root_fd
        #: Deferred metadata of every directory made, keyed by relative path.
        self._dirs: dict[str, Entry] = {}
        self._root_entry: Entry | None = None
        self._closed = False

    # -- context manager --------------------------------------------------

    def __enter__(self) -> SafeWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    # -- writing ------------------------------------------------------------

    def write(self, entry: Entry, blocks: Iterable[bytes] = ()) -> None:
        """Create one entry (already filtered, name cleaned); raises naming the member."""
        name = entry.name
        if self._admit:
            self._budget.admit(entry)
        if name == ".":
            self._write_root(entry)
            return
        parent, base = _split(name)
        if base == ".":
            self._write_root(entry)
            return
        kind = entry.type
        try:
            pfd = self._last_fd if parent == self._last_parent else self._parent_fd(name, parent)
            if kind is EntryType.FILE:
                self._write_file(entry, pfd, base, blocks)
            elif kind is EntryType.DIR:
                self._write_dir(entry, pfd, base, f"{parent}/{base}" if parent else base)
            elif kind is EntryType.SYMLINK:
                self._write_symlink(entry, pfd, base)
            elif kind is EntryType.HARDLINK:
                raise _corrupt(
                    name,
                    f"is a hardlink to {entry.linkname!r}: hardlinks are not supported"
                    " (the original Repeatr rejects them too)",
                )
            elif kind in _NODE_TYPES:
                self._write_node(entry, pfd, base)
            else:  # pragma: no cover - EntryType is closed
                raise _corrupt(name, f"unknown entry type {kind!r}")
        except OSError as exc:
            raise self._os_error(name, exc) from exc

    def _os_error(self, name: str, exc: OSError) -> RepeatrError:
        what = os.strerror(exc.errno) if exc.errno else str(exc)
        if is_no_space(exc):
            return DiskFull.of(exc, self.root, f"write archive member {name!r} under")
        if exc.errno == errno.ENAMETOOLONG:
            return _corrupt(name, f"cannot be created: {what}")
        hint = None
        if exc.errno == errno.EPERM and os.geteuid() != 0:
            hint = "giving files other owners needs root: unpack with uid=mine,gid=mine"
        return FilesetError(
            f"archive member {name!r}: cannot be written under {os.fspath(self.root)!r}: {what}",
            category=Category.INOPERABLE_PATH,
            hint=hint,
        )

    def _existing(self, entry: Entry, pfd: int, base: str) -> bool:
        """After EEXIST: True if it's the same type (a duplicate to replace)."""
        st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        have = _ENTRY_TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
        if have is entry.type:
            return True
        was = TYPE_WORDS[have] if have is not None else "unknown"
        raise _corrupt(
            entry.name, f"duplicate entry changes type from {was} to {TYPE_WORDS[entry.type]}"
        )

    def _write_file(self, entry: Entry, pfd: int, base: str, blocks: Iterable[bytes]) -> None:
        mode = entry.mode
        # Create with the final mode when umask can't alter it (saves an
        # fchmod); setid/sticky bits always go through fchmod, after fchown.
        plain = self._umask is not None and not mode & self._umask
        create_mode = mode if plain else 0o600
        try:
            fd = os.open(base, _FILE_FLAGS, create_mode, dir_fd=pfd)
        except FileExistsError:
            self._existing(entry, pfd, base)
            os.unlink(base, dir_fd=pfd)
            fd = os.open(base, _FILE_FLAGS, create_mode, dir_fd=pfd)
        try:
            # Zeros become holes (see repeatr.fileset.sparse): what the disk
            # budget counts is what is allocated, not the declared size.
            out = SparseWriter(fd, lambda n: self._budget.add_disk(entry.name, n))
            write = out.write
            for block in blocks:
                write(block)
            budget_bytes = out.finish()
            if budget_bytes != entry.size:
                # Direct callers may leave size at 0: count what was written
                # instead of what was declared.
                self._budget.add_bytes(entry.name, budget_bytes - entry.size)
            if (entry.uid, entry.gid) != self._owner:
                os.fchown(fd, entry.uid, entry.gid)
            if entry.xattrs:
                self._set_xattrs(entry, fd)
            if not plain:
                os.fchmod(fd, mode)
            ns = _ns(entry)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _write_dir(self, entry: Entry, pfd: int, base: str, rel: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            self._existing(entry, pfd, base)
        if entry.xattrs:
            self._set_xattrs(entry, self._parent_fd(entry.name, rel))
        self._dirs[rel] = entry

    def _write_symlink(self, entry: Entry, pfd: int, base: str) -> None:
        if not entry.linkname:
            raise _corrupt(entry.name, "symlink with an empty target")
        try:
            os.symlink(entry.linkname, base, dir_fd=pfd)
        except FileExistsError:
            self._existing(entry, pfd, base)
            os.unlink(base, dir_fd=pfd)
            os.symlink(entry.linkname, base, dir_fd=pfd)
        if (entry.uid, entry.gid) != self._owner:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        if entry.xattrs:
            self._set_xattrs(entry, f"/proc/self/fd/{pfd}/{base}")
        ns = _ns(entry)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def _write_node(self, entry: Entry, pfd: int, base: str) -> None:
        kind = _NODE_TYPES[entry.type]
        is_dev = entry.type in (EntryType.CHAR, EntryType.BLOCK)
        device = os.makedev(entry.devmajor, entry.devminor) if is_dev else 0
        try:
            try:
                os.mknod(base, kind | 0o600, device, dir_fd=pfd)
            except FileExistsError:
                self._existing(entry, pfd, base)
                os.unlink(base, dir_fd=pfd)
                os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        except PermissionError as exc:
            raise FilesetError(
                f"archive member {entry.name!r}: cannot create a {TYPE_WORDS[entry.type]}"
                f" here: {exc.strerror}",
                category=Category.FILTER_REJECTION,
                hint="unpack as root, or with the filter dev=ignore or dev=reject",
            ) from exc
        if (entry.uid, entry.gid) != self._owner:
            os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
        if entry.xattrs:
            self._set_xattrs(entry, f"/proc/self/fd/{pfd}/{base}")
        os.chmod(base, entry.mode, dir_fd=pfd, follow_symlinks=False)
        ns = _ns(entry)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)

    def _write_root(self, entry: Entry) -> None:
        if entry.type is not EntryType.DIR:
            raise _corrupt(
                entry.name, f"the root must be a directory, not a {TYPE_WORDS[entry.type]}"
            )
        if entry.xattrs:
            try:
                self._set_xattrs(entry, self._root_fd)
            except OSError as exc:
                raise self._os_error(entry.name, exc) from exc
        self._root_entry = entry

    def _set_xattrs(self, entry: Entry, target: int | str) -> None:
        # An fd is the entry itself; a path is /proc/self/fd/<parent>/<name>,
        # whose last component must not be followed.
        follow = isinstance(target, int)
        for key in sorted(entry.xattrs):
            try:
                os.setxattr(target, key, entry.xattrs[key], follow_symlinks=follow)
            except OSError as exc:
                raise FilesetError(
                    f"archive member {entry.name!r}: cannot set xattr {key!r}:"
                    f" {os.strerror(exc.errno) if exc.errno else exc}",
                    category=Category.INOPERABLE_PATH,
                    hint="the destination filesystem may not support it",
                ) from exc

    # -- directory fds ------------------------------------------------------

    def _parent_fd(self, name: str, parent: str) -> int:
        """The fd of directory ``parent``, opening (or making) it one component at a time."""
        fds = self._fds
        fd = fds.get(parent)
        if fd is not None:
            fds[parent] = fds.pop(parent)  # most recently used last
        else:
            # Nearest open ancestor, then down one component at a time.
            parts = parent.split("/")
            depth = len(parts) - 1
            while depth > 0 and "/".join(parts[:depth]) not in fds:
                depth -= 1
            prefix = "/".join(parts[:depth])
            fd = fds[prefix]
            for part in parts[depth:]:
                prefix = f"{prefix}/{part}" if prefix else part
                fd = self._open_child(name, fd, part, prefix)
                fds[prefix] = fd
            if len(fds) > _FD_CACHE_SIZE:
                self._evict()
        self._last_parent = parent
        self._last_fd = fd
        return fd

    def _open_child(self, name: str, pfd: int, part: str, rel: str) -> int:
        try:
            return os.open(part, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            pass
        except NotADirectoryError:
            st = os.stat(part, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise _corrupt(
                    name, f"its parent {rel!r} is a symlink: writing through it is not allowed"
                ) from None
            raise _corrupt(name, f"its parent {rel!r} is not a directory") from None
        # A parent the archive implies but hasn't (yet) held.
        implied = self._implied(rel)
        os.mkdir(part, 0o700, dir_fd=pfd)
        self._dirs[rel] = implied
        return os.open(part, _DIR_FLAGS, dir_fd=pfd)

    def _evict(self) -> None:
        """Close the least recently used half of the cache (never the root)."""
        fds = self._fds
        victims = [rel for rel in fds if rel][: len(fds) // 2]
        for rel in victims:
            fd = fds.pop(rel)
            if fd == self._last_fd:
                self._last_parent = ""
                self._last_fd = self._root_fd
            os.close(fd)

    # -- finishing ----------------------------------------------------------

    def finish(self) -> None:
        """Apply deferred directory owners, modes and mtimes, deepest first, then the root's."""
        order = sorted(self._dirs, key=lambda rel: (-rel.count("/"), rel))
        for rel in order:
            entry = self._dirs[rel]
            parent, base = _split(rel)
            try:
                pfd = self._parent_fd(rel, parent)
                # A directory is never replaced once made (see the module
                # docstring), so chmod by name can't be led elsewhere.
                if (entry.uid, entry.gid) != self._owner:
                    os.chown(base, entry.uid, entry.gid, dir_fd=pfd, follow_symlinks=False)
                os.chmod(base, entry.mode, dir_fd=pfd)
                ns = _ns(entry)
                os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise self._os_error(rel, exc) from exc
        root = self._root_entry
        try:
            if root is None:
                root = self._implied(".")
            os.fchown(self._root_fd, root.uid, root.gid)
            os.fchmod(self._root_fd, root.mode)
            ns = _ns(root)
            os.utime(self._root_fd, ns=(ns, ns))
        except OSError as exc:
            raise self._os_error(".", exc) from exc
