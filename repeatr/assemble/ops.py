"""Mount operations and cradle steps: the container filesystem as data.

Each operation is an immutable value with ``describe()`` (one line for
``--debug``) and ``execute(root)``; ``to_json``/``op_from_json`` let the
parent hand a list of them to the helper process, which executes them inside
its private mount namespace (never the host's). Destinations are container
paths resolved with ``repeatr.assemble.resolve`` (no symlink is followed);
host paths (bind sources, overlay layers) are chosen by repeatr or the
formula's ``mount:`` inputs and are used as given.

Order matters and is the planner's job (``repeatr.assemble.plan``).

The classes are written out by hand, not as dataclasses: importing
``dataclasses`` (and ``inspect``, ``re``...) doubled the helper's start-up
time. ``Op`` gives them value semantics from ``fields``.
"""

from __future__ import annotations

import os
import stat

from repeatr.assemble.resolve import fd_path, open_in_root, open_root
from repeatr.errors import AssemblyError, JobInvalid
from repeatr.linux import libc

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the helper's start-up time; annotations only
    from collections.abc import Iterable
    from typing import Any, ClassVar

    from repeatr.assemble.resolve import Create

CRADLE_MTIME = 1262304000  # 2010-01-01T00:00:00Z (compat.md, the cradle)


class Root:
    """The new root: a host directory, only ever entered through descriptors."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def open(self, dest: str, create: Create = None, created: list[str] | None = None) -> int:
        """An O_PATH descriptor of container path ``dest`` (the root itself for ``/``)."""
        rfd = open_root(self.path)
        if dest == "/":
            return rfd
        try:
            return open_in_root(rfd, dest, create=create, created=created)
        finally:
            os.close(rfd)

    def mount_at(
        self, dest: str, create: Create, source: str | None, fstype: str | None,
        flags: int = 0, data: str | None = None,
    ) -> None:
        """mount(2) onto ``dest``, through a descriptor when ``dest`` is not the root."""
        if dest == "/":
            libc.mount(source, self.path, fstype, flags, data)
            return
        fd = self.open(dest, create)
        try:
            libc.mount(source, fd_path(fd), fstype, flags, data)
        finally:
            os.close(fd)


class Op:
    """Base of every operation: immutable values named by ``fields``."""

    kind: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()
    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in self.fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.fields)
        return f"{type(self).__name__}({args})"

    @property
    def target(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def execute(self, root: Root) -> None:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.kind}
        for f in self.fields:
            v = getattr(self, f)
            d[f] = list(v) if isinstance(v, tuple) else v
        return d


class Bind(Op):
    """Bind a host path; ``ro`` is read-only for every submount too."""

    kind = "bind"
    fields = ("src", "dest", "ro", "recursive")
    __slots__ = fields
    src: str
    dest: str
    ro: bool
    recursive: bool

    def __init__(self, src: str, dest: str, ro: bool = True, recursive: bool = True) -> None:
        self._set(src=src, dest=dest, ro=ro, recursive=recursive)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        opts = ("ro" if self.ro else "rw") + (",rec" if self.recursive else "")
        return f"bind {self.src} -> {self.dest} ({opts})"

    def execute(self, root: Root) -> None:
        try:
            st = os.stat(self.src)
        except OSError as e:
            raise AssemblyError(f"bind source {self.src} is not usable: {e.strerror}") from e
        create: Create = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        flags = libc.MS_BIND | (libc.MS_REC if self.recursive else 0)
        root.mount_at(self.dest, create, self.src, None, flags)
        if self.ro:
            fd = root.open(self.dest)  # now the root of the new mount
            try:
                libc.mount_setattr(
                    fd, "",
                    libc.AT_EMPTY_PATH | (libc.AT_RECURSIVE if self.recursive else 0),
                    attr_set=libc.MOUNT_ATTR_RDONLY,
                )
            finally:
                os.close(fd)


def _escape_layer(path: str) -> str:
    # fs/overlayfs/params.c: backslash escapes ',' and ':' in lowerdir lists.
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


class Overlay(Op):
    """Overlay of read-only ``lowers`` (first is top); writable if ``upper`` is set.

    A missing upper dir is created with the top lower's mode, owner and
    mtime, since the merged root directory takes its metadata from the upper.
    """

    kind = "overlay"
    fields = ("lowers", "dest", "upper", "work")
    __slots__ = fields
    lowers: tuple[str, ...]
    dest: str
    upper: str | None
    work: str | None

    def __init__(
        self, lowers: tuple[str, ...] | list[str], dest: str,
        upper: str | None = None, work: str | None = None,
    ) -> None:
        self._set(lowers=tuple(lowers), dest=dest, upper=upper, work=work)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        rw = f" upper={self.upper}" if self.upper else " (ro)"
        return f"overlay {':'.join(self.lowers)} -> {self.dest}{rw}"

    def execute(self, root: Root) -> None:
        if not self.lowers:
            raise AssemblyError(f"{self.describe()}: no lower layer")
        data = "lowerdir=" + ":".join(_escape_layer(x) for x in self.lowers)
        if self.upper is not None:
            if self.work is None:
                raise AssemblyError(f"{self.describe()}: an upper dir needs a work dir")
            if not os.path.isdir(self.upper):
                top = os.stat(self.lowers[0])
                os.makedirs(self.upper)
                os.chmod(self.upper, stat.S_IMODE(top.st_mode))
                os.chown(self.upper, top.st_uid, top.st_gid)
                os.utime(self.upper, ns=(top.st_atime_ns, top.st_mtime_ns))
            os.makedirs(self.work, exist_ok=True)
            data += f",upperdir={_escape_layer(self.upper)},workdir={_escape_layer(self.work)}"
        root.mount_at(self.dest, "dir", "overlay", "overlay", 0, data)


class Tmpfs(Op):
    kind = "tmpfs"
    fields = ("dest", "mode", "size")
    __slots__ = fields
    dest: str
    mode: int
    size: str | None

    def __init__(self, dest: str, mode: int = 0o755, size: str | None = None) -> None:
        self._set(dest=dest, mode=mode, size=size)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        return f"tmpfs -> {self.dest} (mode {self.mode:04o})"

    def execute(self, root: Root) -> None:
        data = f"mode={self.mode:o}" + (f",size={self.size}" if self.size else "")
        root.mount_at(self.dest, "dir", "tmpfs", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, data)


class Proc(Op):
    """procfs of the mounting process's pid namespace (the ns executor's PID 1 mounts it)."""

    kind = "proc"
    fields = ("dest",)
    __slots__ = fields
    dest: str

    def __init__(self, dest: str = "/proc") -> None:
        self._set(dest=dest)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        return f"proc -> {self.dest}"

    def execute(self, root: Root) -> None:
        flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        root.mount_at(self.dest, "dir", "proc", "proc", flags)


DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


class Dev(Op):
    """A minimal /dev: tmpfs, host nodes bound in, a private devpts, shm."""

    kind = "dev"
    fields = ("dest",)
    __slots__ = fields
    dest: str

    def __init__(self, dest: str = "/dev") -> None:
        self._set(dest=dest)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        return f"dev -> {self.dest} ({' '.join(DEV_NODES)}, pts, shm)"

    def execute(self, root: Root) -> None:
        root.mount_at(
            self.dest, "dir", "tmpfs", "tmpfs", libc.MS_NOSUID | libc.MS_NOEXEC, "mode=755,size=64k"
        )
        dev = root.open(self.dest)
        try:
            for name in DEV_NODES:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666, dir_fd=dev))
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dev)
                try:
                    libc.mount(f"/dev/{name}", fd_path(nfd), None, libc.MS_BIND)
                finally:
                    os.close(nfd)
            for sub in ("pts", "shm"):
                os.mkdir(sub, 0o755, dir_fd=dev)
            for name, target in DEV_LINKS:
                os.symlink(target, name, dir_fd=dev)
        finally:
            os.close(dev)
        root.mount_at(
            self.dest + "/pts" if self.dest != "/" else "/pts", None, "devpts", "devpts",
            libc.MS_NOSUID | libc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620",
        )
        root.mount_at(
            self.dest + "/shm" if self.dest != "/" else "/shm", None, "shm", "tmpfs",
            libc.MS_NOSUID | libc.MS_NODEV, "mode=1777",
        )


class Mkdir(Op):
    """A cradle step: make a directory (and missing parents) if absent.

    A directory created here gets ``mode``, ``uid``:``gid`` and ``mtime``
    (missing parents: 0755 root-owned, same mtime). ``force_mode`` also sets
    the mode of an existing directory (the cradle's ``/tmp`` 01777).
    """

    kind = "mkdir"
    fields = ("path", "mode", "uid", "gid", "mtime", "force_mode")
    __slots__ = fields
    path: str
    mode: int
    uid: int
    gid: int
    mtime: int | None
    force_mode: bool

    def __init__(
        self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
        mtime: int | None = CRADLE_MTIME, force_mode: bool = False,
    ) -> None:
        self._set(path=path, mode=mode, uid=uid, gid=gid, mtime=mtime, force_mode=force_mode)

    @property
    def target(self) -> str:
        return self.path

    def describe(self) -> str:
        return f"mkdir {self.path} (mode {self.mode:04o}, {self.uid}:{self.gid})"

    def execute(self, root: Root) -> None:
        created: list[str] = []
        try:
            fd = root.open(self.path, "dir", created)
        except AssemblyError as exc:
            # Mkdir steps are the cradle's cwd, home and /tmp: a path the image
            # made unusable (a file, a symlink) is a bad job, not a bad mount.
            raise JobInvalid(f"cradle: {exc.message}") from exc
        try:
            leaf_new = bool(created) and created[-1] == self.path
            if leaf_new:
                os.chown(fd_path(fd), self.uid, self.gid)
            if leaf_new or self.force_mode:
                os.chmod(fd_path(fd), self.mode)
        finally:
            os.close(fd)
        if self.mtime is not None:
            for path in reversed(created):
                pfd = root.open(path)
                try:
                    os.utime(fd_path(pfd), (self.mtime, self.mtime))
                finally:
                    os.close(pfd)


OP_TYPES: dict[str, type[Op]] = {
    t.kind: t for t in (Bind, Overlay, Tmpfs, Proc, Dev, Mkdir)
}


def op_from_json(d: dict[str, Any]) -> Op:
    """The inverse of ``Op.to_json``."""
    d = dict(d)
    try:
        cls = OP_TYPES[d.pop("op")]
    except KeyError as e:
        raise AssemblyError(f"unknown mount operation {e}") from None
    try:
        return cls(**d)
    except TypeError as e:
        raise AssemblyError(f"malformed {cls.kind} operation: {e}") from None


def execute_all(ops: Iterable[Op], root: Root) -> None:
    """Execute ``ops`` in order; an OSError becomes an AssemblyError naming the op."""
    for op in ops:
        try:
            op.execute(root)
        except OSError as e:
            raise AssemblyError(f"{op.describe()}: {e}") from e
