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
        #: Paths created as mount points of repeatr's own mounts (everything
        #: but the container's layers): ``repeatr.assemble.release`` removes
        #: them again before outputs are packed.
        self.mountpoints: list[str] = []
        #: Set by ``execute_all`` while an op that is not a layer runs.
        self.recording = False
        #: Mount IDs of the container's layers (``repeatr.assemble.release``).
        self.layers: frozenset[int] = frozenset()
        #: Whether ``repeatr.assemble.release`` has work to do before packing
        #: (the helper turns it off when nothing is packed and no mount point
        #: can be in a host path).
        self.releasing = True

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
        fd = self.open(dest, create, self.mountpoints if self.recording else None)
        try:
            libc.mount(source, fd_path(fd), fstype, flags, data)
        finally:
            os.close(fd)


class Op:
    """Base of every operation: immutable values named by ``fields``."""

    kind: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()
    #: A layer of the container's own filesystem (what the job writes to is
    #: packed from these); every other mount is repeatr's and is not part of
    #: an output.
    layer: ClassVar[bool] = False
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
    """Bind a host path, nodev and nosuid; ``ro`` is read-only. Both hold for
    every submount too (``recursive``)."""

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
        opts = ("ro" if self.ro else "rw") + ",nodev,nosuid" + (",rec" if self.recursive else "")
        return f"bind {self.src} -> {self.dest} ({opts})"

    def execute(self, root: Root) -> None:
        try:
            st = os.stat(self.src)
        except OSError as e:
            raise AssemblyError(f"bind source {self.src} is not usable: {e.strerror}") from e
        create: Create = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        flags = libc.MS_BIND | (libc.MS_REC if self.recursive else 0)
        root.mount_at(self.dest, create, self.src, None, flags)
        fd = root.open(self.dest)  # now the root of the new mount
        try:
            libc.mount_setattr(
                fd, "",
                libc.AT_EMPTY_PATH | (libc.AT_RECURSIVE if self.recursive else 0),
                attr_set=_ATTR_WARE | (libc.MOUNT_ATTR_RDONLY if self.ro else 0),
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
    layer = True
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
        return f"overlay {':'.join(self.lowers)} -> {self.dest}{rw} (nodev,nosuid)"

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
        root.mount_at(self.dest, "dir", "overlay", "overlay", WARE_FLAGS, data)


class Tmpfs(Op):
    """An empty writable tmpfs: a layer of the container (the root when no input is)."""

    kind = "tmpfs"
    layer = True
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
        return f"tmpfs -> {self.dest} (mode {self.mode:04o}, nodev,nosuid)"

    def execute(self, root: Root) -> None:
        data = f"mode={self.mode:o}" + (f",size={self.size}" if self.size else "")
        root.mount_at(self.dest, "dir", "tmpfs", "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, data)


#: /proc paths a job must not read (kernel memory, keys, timers: host secrets),
#: and paths it must not write (sysctls, sysrq, irq affinity: the host's
#: kernel). runc's defaults (``runc spec``'s maskedPaths and readonlyPaths):
#: the ns and chroot executors apply them with ``MaskPath``/``ReadOnlyPath``
#: after mounting /proc, the OCI executors hand them to the runtime.
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
#: Flags of every mount repeatr makes from a ware or a host path: a device node
#: or a setuid file shipped in a ware never reaches a host device or root.
#: (setuid is never honoured anyway: every job runs with no_new_privs.)
WARE_FLAGS = libc.MS_NODEV | libc.MS_NOSUID
_ATTR_WARE = libc.MOUNT_ATTR_NODEV | libc.MOUNT_ATTR_NOSUID
_ATTR_LOCKED = _ATTR_WARE | libc.MOUNT_ATTR_RDONLY | libc.MOUNT_ATTR_NOEXEC


def _open_present(root: Root, dest: str) -> int | None:
    """An O_PATH descriptor of ``dest`` (never a symlink), or None if it does not exist."""
    parent, _, name = dest.rpartition("/")
    pfd = root.open(parent or "/")
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    except FileNotFoundError:
        return None
    finally:
        os.close(pfd)
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise AssemblyError(f"{dest} is a symlink in the container: it is not masked through it")
    return fd


class MaskPath(Op):
    """Hide ``dest`` (runc's maskedPaths): /dev/null over a file, an empty
    read-only tmpfs over a directory; nothing if it does not exist."""

    kind = "mask"
    fields = ("dest",)
    __slots__ = fields
    dest: str

    def __init__(self, dest: str) -> None:
        self._set(dest=dest)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        return f"mask {self.dest}"

    def execute(self, root: Root) -> None:
        fd = _open_present(root, self.dest)
        if fd is None:
            return
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                flags = libc.MS_RDONLY | WARE_FLAGS | libc.MS_NOEXEC
                libc.mount("tmpfs", fd_path(fd), "tmpfs", flags, "mode=555,size=4k")
            else:
                libc.mount("/dev/null", fd_path(fd), None, libc.MS_BIND)
        finally:
            os.close(fd)


class ReadOnlyPath(Op):
    """Make ``dest`` and everything under it read-only (runc's readonlyPaths):
    a recursive bind onto itself, then ro, nosuid, nodev, noexec on it."""

    kind = "readonly"
    fields = ("dest",)
    __slots__ = fields
    dest: str

    def __init__(self, dest: str) -> None:
        self._set(dest=dest)

    @property
    def target(self) -> str:
        return self.dest

    def describe(self) -> str:
        return f"read-only {self.dest}"

    def execute(self, root: Root) -> None:
        fd = _open_present(root, self.dest)
        if fd is None:
            return
        try:
            libc.mount(fd_path(fd), fd_path(fd), None, libc.MS_BIND | libc.MS_REC)
        finally:
            os.close(fd)
        fd = root.open(self.dest)  # now the root of the new mount
        try:
            libc.mount_setattr(
                fd, "", libc.AT_EMPTY_PATH | libc.AT_RECURSIVE, attr_set=_ATTR_LOCKED
            )
        finally:
            os.close(fd)


class Proc(Op):
    """procfs of the mounting process's pid namespace (the job, as PID 1 of
    its own pid namespace, mounts it), then masked and made read-only where
    runc does (``hardening``): a uid-0 job writes no sysctl and reads no
    kernel memory, and a proc mount it would make in a user namespace of its
    own is refused by the kernel (a masked proc is not "fully visible").
    ``hidepid`` is procfs's option (``invisible``: other users' processes
    are not even listed)."""

    kind = "proc"
    fields = ("dest", "hidepid")
    __slots__ = fields
    dest: str
    hidepid: str | None

    def __init__(self, dest: str = "/proc", hidepid: str | None = None) -> None:
        self._set(dest=dest, hidepid=hidepid)

    @property
    def target(self) -> str:
        return self.dest

    def hardening(self) -> tuple[Op, ...]:
        """The masks and read-only binds over this /proc, runc's paths moved to ``dest``."""
        base = self.dest.rstrip("/")

        def moved(path: str) -> str:
            return base + path.removeprefix("/proc")

        under = [p for p in (*MASKED_PATHS, *READONLY_PATHS) if p.startswith("/proc/")]
        return tuple(
            MaskPath(moved(p)) if p in MASKED_PATHS else ReadOnlyPath(moved(p)) for p in under
        )

    def options(self) -> str:
        return "nosuid,nodev,noexec" + (f",hidepid={self.hidepid}" if self.hidepid else "")

    def describe(self) -> str:
        masked = " ".join(op.target for op in self.hardening() if isinstance(op, MaskPath))
        ro = " ".join(op.target for op in self.hardening() if isinstance(op, ReadOnlyPath))
        return f"proc -> {self.dest} ({self.options()}); masked: {masked}; read-only: {ro}"

    def execute(self, root: Root) -> None:
        flags = libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
        data = f"hidepid={self.hidepid}" if self.hidepid else None
        root.mount_at(self.dest, "dir", "proc", "proc", flags, data)
        for op in self.hardening():
            try:
                op.execute(root)
            except OSError as e:
                raise AssemblyError(f"{op.describe()}: {e}") from e


DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


class Dev(Op):
    """A minimal /dev: a nodev tmpfs, host nodes bound in, a private devpts, shm.

    The bound nodes are mounts of their own (the host's /dev flags): they are
    the only device nodes a job can open; one it makes itself (CAP_MKNOD)
    anywhere in its filesystem opens nothing (every other mount is nodev)."""

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
            self.dest, "dir", "tmpfs", "tmpfs", WARE_FLAGS | libc.MS_NOEXEC, "mode=755,size=64k"
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
    """A cradle step: make a directory usable, as the original's cradle did.

    ``usable`` (the cwd and the home dir; rio's ``MkdirUsable``): every
    missing component is created with ``mode``, ``uid``:``gid`` and
    ``mtime``; an existing parent gets ``o+x``, an existing leaf ``u+rwx``;
    the leaf is then owned by ``uid``:``gid`` whether it existed or not.
    Otherwise (``/tmp``): created if missing (root-owned, ``mode``,
    ``mtime``) and then given ``mode`` even if it existed.
    Either way the mtime of every directory the step changed is put back
    (the original's ``RepairMtime``), so only what the step created is new.

    ``host`` is the container path of a host bind mount (a ``mount:`` input)
    at or above ``path``, set by the planner: from there on nothing is
    created, chmodded, chowned or re-timed, since it is the host's.
    """

    kind = "mkdir"
    fields = ("path", "mode", "uid", "gid", "mtime", "usable", "host")
    __slots__ = fields
    path: str
    mode: int
    uid: int
    gid: int
    mtime: int
    usable: bool
    host: str | None

    def __init__(
        self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
        mtime: int = CRADLE_MTIME, usable: bool = True, host: str | None = None,
    ) -> None:
        self._set(path=path, mode=mode, uid=uid, gid=gid, mtime=mtime, usable=usable, host=host)

    @property
    def target(self) -> str:
        return self.path

    def on_host(self, path: str) -> bool:
        """``path`` is the host bind itself or inside it."""
        h = self.host
        return h is not None and (h == "/" or path == h or path.startswith(h + "/"))

    def describe(self) -> str:
        what = "usable" if self.usable else f"mode {self.mode:04o}"
        host = f"; {self.host} and below are the host's: left alone" if self.host else ""
        return f"mkdir {self.path} ({what}, {self.uid}:{self.gid}{host})"

    def execute(self, root: Root) -> None:
        try:
            self._execute(root)
        except AssemblyError as exc:
            # Mkdir steps are the cradle's cwd, home and /tmp: a path the image
            # made unusable (a file, a symlink) is a bad job, not a bad mount.
            raise JobInvalid(f"cradle: {exc.message}") from exc

    def _execute(self, root: Root) -> None:
        if self.on_host("/"):
            return
        parts = [p for p in self.path.split("/") if p]
        parent_fd = root.open("/")
        try:
            # The root is the first component, as in rio's RelPath.Split: o+x
            # as a parent; for a cwd of "/", owned and u+rwx as the leaf.
            self._existing(parent_fd, os.fstat(parent_fd), "/", not parts)
            walked = ""
            for i, name in enumerate(parts):
                walked += "/" + name
                if self.on_host(walked):
                    return
                leaf = i == len(parts) - 1
                before = os.stat(parent_fd)
                fd = self._step(parent_fd, name, walked, leaf)
                os.utime(fd_path(parent_fd), ns=(before.st_atime_ns, before.st_mtime_ns))
                os.close(parent_fd)
                parent_fd = fd
        finally:
            os.close(parent_fd)

    def _step(self, parent_fd: int, name: str, walked: str, leaf: bool) -> int:
        """Make one component usable; an O_PATH descriptor of it."""
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=parent_fd)
        except FileNotFoundError:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            fd = os.open(name, flags, dir_fd=parent_fd)
            mine = self.usable or leaf
            os.chown(fd_path(fd), self.uid if mine else 0, self.gid if mine else 0)
            os.chmod(fd_path(fd), self.mode if leaf else 0o755)
            os.utime(fd_path(fd), (self.mtime, self.mtime))
            return fd
        try:
            self._existing(fd, os.fstat(fd), walked, leaf)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _existing(self, fd: int, st: os.stat_result, walked: str, leaf: bool) -> None:
        """An existing component: a parent gets o+x, the leaf u+rwx and uid:gid
        (``usable``), or the leaf gets ``mode`` (/tmp)."""
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise AssemblyError(
                f"{self.path}: {walked} is {kind} in the container; the cradle "
                "never follows symlinks (they could point at the host)"
            )
        mode = stat.S_IMODE(st.st_mode)
        if not leaf:
            want = mode | (0o001 if self.usable else 0)
        else:
            want = mode | 0o700 if self.usable else self.mode
        if self.usable and leaf and (st.st_uid, st.st_gid) != (self.uid, self.gid):
            os.chown(fd_path(fd), self.uid, self.gid)
        if want != mode:
            os.chmod(fd_path(fd), want)


OP_TYPES: dict[str, type[Op]] = {
    t.kind: t for t in (Bind, Overlay, Tmpfs, Proc, MaskPath, ReadOnlyPath, Dev, Mkdir)
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
        root.recording = not op.layer and not isinstance(op, Mkdir)
        try:
            op.execute(root)
        except OSError as e:
            raise AssemblyError(f"{op.describe()}: {e}") from e
        finally:
            root.recording = False
