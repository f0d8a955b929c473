"""``ca+file://base/``: a content-addressed warehouse on the local disk.

A ware lives at ``base/<hash[0:3]>/<hash[3:6]>/<hash>`` (hash part only, no
packtype; compat.md "Warehouses"), the same layout rio writes, so one
directory can be shared by both implementations and served as-is over HTTP
as a ``ca+http(s)://`` warehouse.

The base directory must exist: reading from a missing base is
WAREHOUSE_UNAVAILABLE (the warehouse is not there, so fetching moves on),
saving to one is WAREHOUSE_UNWRITABLE (we do not create it, so a typo fails
loudly). Shard directories are created on commit. A save writes
``base/.tmp-<random>`` (same file system, so the rename is atomic; hashes
never start with a dot, so temp files never collide with wares). Committing a
ware that is already present just drops the temp file: the name proves the
content.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from repeatr.errors import Category, WarehouseError
from repeatr.model.wareid import WareID
from repeatr.warehouse import Warehouse, ca_segments
from repeatr.warehouse.file import (
    LocalSave,
    NotRegularFile,
    local_path,
    local_save,
    open_regular,
    unwritable_error,
)

#: Prefix of in-progress saves in the base directory.
TEMP_PREFIX = ".tmp-"


class CAFileWarehouse(Warehouse):
    """A directory of wares sharded by hash."""

    content_addressed = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.base = local_path(url)

    def ware_path(self, ware: WareID) -> Path:
        """Where ``ware`` lives (whether or not it is there)."""
        return self.base.joinpath(*ca_segments(ware))

    def _base_problem(self) -> str | None:
        """Why the base directory is unusable, or None if it is a directory."""
        try:
            if self.base.is_dir():
                return None
        except OSError as exc:
            return f"cannot access {self.base}: {exc.strerror or exc}"
        if self.base.exists():
            return f"{self.base} is not a directory"
        return f"directory {self.base} does not exist"

    @contextlib.contextmanager
    def open_ware(self, ware: WareID) -> Iterator[BinaryIO]:
        path = self.ware_path(ware)
        problem = self._base_problem()
        if problem is not None:
            raise WarehouseError(
                f"warehouse {self.url} unavailable: {problem}",
                category=Category.WAREHOUSE_UNAVAILABLE,
            )
        try:
            stream = open_regular(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise WarehouseError(
                f"ware {ware} not found in warehouse {self.url}",
                category=Category.WARE_NOT_FOUND,
            ) from exc
        except (NotRegularFile, OSError) as exc:
            raise WarehouseError(
                f"warehouse {self.url} unavailable: cannot read {path}: {exc.strerror or exc}",
                category=Category.WAREHOUSE_UNAVAILABLE,
            ) from exc
        with stream:
            yield stream

    def start_save(self) -> contextlib.AbstractContextManager[LocalSave]:
        problem = self._base_problem()
        if problem is not None:
            raise unwritable_error(self.url, problem, hint="create the warehouse directory first")
        return local_save(self.url, self.base, TEMP_PREFIX, self._place)

    def _place(self, temp: Path, ware: WareID) -> None:
        # The shelves are opened below the base without following a symlink
        # (``repeatr.nofollow``): a warehouse dir can come with a checkout
        # (a workspace's staging warehouse), and a shelf linked elsewhere
        # would have root write the ware there.
        from repeatr.nofollow import SymlinkInPath, open_dir

        *shelves, name = ca_segments(ware)
        try:
            with open_dir(self.base, shelves) as shelf:
                try:
                    mode = os.stat(name, dir_fd=shelf, follow_symlinks=False).st_mode
                    present = stat.S_ISREG(mode)
                except FileNotFoundError:
                    present = False
                if present:
                    temp.unlink()
                    return
                os.replace(temp, name, dst_dir_fd=shelf)
                os.fsync(shelf)
        except SymlinkInPath as exc:
            raise unwritable_error(
                self.url, f"{exc.path} is {exc.what}; a ware is never saved through one"
            ) from exc
