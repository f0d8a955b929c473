"""``file://path``: a warehouse that is one ware file on the local disk.

The path follows rio's ``kvfs``: host and path of the URL are joined and made
absolute against the current directory when the URL is parsed, so
``file://./x``, ``file://x`` and ``file://dir/x`` are relative and
``file:///abs`` is absolute; a trailing slash is dropped, ``%xx`` escapes are
decoded, ``?query`` and ``#fragment`` are not part of the path.

Reading: a missing file is WARE_NOT_FOUND, but only when its directory
exists; a missing directory, a path that is not a regular file (a directory,
a FIFO, a device) or a permission problem is WAREHOUSE_UNAVAILABLE: the
warehouse itself is wrong, so fetching should move on to the next source.

Saving writes ``.<name>.tmp-<owner>.<random>`` beside the target, fsyncs it and
renames it over the target on commit. A missing directory is
WAREHOUSE_UNWRITABLE (rio said "unavailable"; "unwritable" tells the user
the save failed and what to fix): we do not create it, since a typo in a
save URL should fail loudly, not scatter directories.

``LocalSave`` (temp file + rename) is shared with ``ca+file://``.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from repeatr.errors import (
    Category,
    DiskFull,
    RepeatrError,
    UsageError,
    WarehouseError,
    is_no_space,
)
from repeatr.model.wareid import WareID
from repeatr.owner import Owner
from repeatr.warehouse import SaveSession, Warehouse


def local_path(url: str) -> Path:
    """The absolute path a ``file://`` or ``ca+file://`` URL names (rio: Abs(Join(host, path)))."""
    parts = urlsplit(url)
    # Concatenate, not os.path.join: "file://./x" is netloc "." + path "/x",
    # and Go's filepath.Join keeps that relative where os.path.join would not.
    joined = unquote(parts.netloc) + unquote(parts.path)
    if not joined:
        raise UsageError(
            f"warehouse URL {url!r} names no path",
            hint="write file://./relative/path or file:///absolute/path",
        )
    return Path(os.path.abspath(joined))


class NotRegularFile(OSError):
    """The path exists but is not a regular file."""


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file.

    O_NONBLOCK so that a FIFO at the path cannot hang the open; the flag is
    cleared again before the file is handed out.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise NotRegularFile(f"{path} is {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unwritable_error(
    url: str, what: str, exc: OSError | None = None, hint: str | None = None
) -> RepeatrError:
    """WAREHOUSE_UNWRITABLE naming the URL, what failed and the OS reason.

    DISK_FULL instead when the warehouse's filesystem is full or over quota.
    """
    reason = f": {exc.strerror or exc}" if exc is not None else ""
    if is_no_space(exc):
        return DiskFull(
            f"disk full: cannot save to warehouse {url}: {what}{reason}",
            hint="free space in the warehouse's filesystem, or save to another warehouse",
        )
    return WarehouseError(
        f"cannot save to warehouse {url}: {what}{reason}",
        category=Category.WAREHOUSE_UNWRITABLE,
        hint=hint,
    )


class _TempWriter(io.BufferedWriter):
    """The temp file's writer: an OS error (a full disk) names the warehouse and the file.

    Raised as WAREHOUSE_UNWRITABLE, not an OSError, so the packer writing
    into it does not take it for a problem reading what it packs.
    """

    def __init__(self, url: str, path: Path, fd: int) -> None:
        super().__init__(io.FileIO(fd, "wb"))
        self.url = url
        self.path = path

    def _failed(self, exc: OSError) -> RepeatrError:
        return unwritable_error(self.url, f"writing {self.path}", exc)

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise self._failed(exc) from exc

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise self._failed(exc) from exc


class LocalSave(SaveSession):
    """A temp file in the target's file system, renamed into place on commit.

    ``place(temp, ware)`` does the final move; it runs after the data is
    fsynced, so a crash leaves either the old state or the complete ware.
    The owner calls ``discard()`` on leaving the context: a no-op after a
    commit, otherwise it removes the temp file.
    """

    def __init__(
        self, url: str, temp: Path, file: BinaryIO, place: Callable[[Path, WareID], None]
    ) -> None:
        self.url = url
        self.temp = temp
        self.file = file
        self._place = place
        self._committed = False

    def commit(self, ware: WareID) -> None:
        if self._committed:
            raise RepeatrError(f"ware {ware} was already committed to {self.url}")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self._place(self.temp, ware)
        except OSError as exc:
            raise unwritable_error(self.url, f"committing {ware}", exc) from exc
        self._committed = True

    def discard(self) -> None:
        try:
            self.file.close()  # flushes: fails again on a full disk
        except (OSError, RepeatrError):
            if self._committed:
                raise
        finally:
            if not self._committed:
                self.temp.unlink(missing_ok=True)


def reap_dead_temps(temp_dir: Path, temp_name: str) -> list[Path]:
    """Remove temp files of saves whose process is gone; the ones removed."""
    reaped: list[Path] = []
    try:
        names = os.listdir(temp_dir)
    except OSError:
        return reaped
    for name in names:
        if not name.startswith(temp_name):
            continue
        owner_text, dot, _token = name[len(temp_name) :].rpartition(".")
        try:
            owner = Owner.parse(owner_text) if dot else None
        except RepeatrError:
            owner = None
        if owner is not None and not owner.is_alive():
            with contextlib.suppress(OSError):
                os.unlink(temp_dir / name)
                reaped.append(temp_dir / name)
    return reaped


@contextlib.contextmanager
def local_save(
    url: str, temp_dir: Path, temp_name: str, place: Callable[[Path, WareID], None]
) -> Iterator[LocalSave]:
    """Create ``temp_dir/<temp_name><owner>.<random>`` (0644, exclusive); yield a session on it.

    The temp file names its owner (pid + start time, :mod:`repeatr.owner`), so a
    save killed by SIGKILL leaves a file the next save here recognises as dead
    and removes.
    """
    reap_dead_temps(temp_dir, temp_name)
    temp = temp_dir / f"{temp_name}{Owner.current()}.{secrets.token_hex(8)}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise unwritable_error(
            url, f"directory {temp_dir} does not exist", exc, hint="create it first"
        ) from exc
    except OSError as exc:
        raise unwritable_error(url, f"cannot create a temp file in {temp_dir}", exc) from exc
    session = LocalSave(url, temp, _TempWriter(url, temp, fd), place)
    try:
        yield session
    finally:
        session.discard()


class FileWarehouse(Warehouse):
    """One ware file; any packtype (the file is the ware, its ID is not checked here)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = local_path(url)

    def open_ware(self, ware: WareID) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(f"ware {ware}")

    def open_file(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open("ware file")

    @contextlib.contextmanager
    def _open(self, what: str) -> Iterator[BinaryIO]:
        try:
            stream = open_regular(self.path)
        except FileNotFoundError as exc:
            if self.path.parent.is_dir():
                raise WarehouseError(
                    f"{what} not found: {self.path} does not exist",
                    category=Category.WARE_NOT_FOUND,
                ) from exc
            raise WarehouseError(
                f"warehouse {self.url} unavailable: directory {self.path.parent} does not exist",
                category=Category.WAREHOUSE_UNAVAILABLE,
            ) from exc
        except NotRegularFile as exc:
            hint = "a directory of wares is a ca+file:// warehouse" if self.path.is_dir() else None
            raise WarehouseError(
                f"warehouse {self.url} unavailable: {exc}",
                category=Category.WAREHOUSE_UNAVAILABLE,
                hint=hint,
            ) from exc
        except OSError as exc:
            raise WarehouseError(
                f"warehouse {self.url} unavailable: cannot read {self.path}: {exc.strerror or exc}",
                category=Category.WAREHOUSE_UNAVAILABLE,
            ) from exc
        with stream:
            yield stream

    def start_save(self) -> contextlib.AbstractContextManager[LocalSave]:
        if self.path.is_dir():
            raise unwritable_error(self.url, f"{self.path} is a directory")
        return local_save(self.url, self.path.parent, f".{self.path.name}.tmp-", self._place)

    def _place(self, temp: Path, ware: WareID) -> None:
        os.replace(temp, self.path)
        fsync_dir(self.path.parent)
