"""One error hierarchy. Every failure carries a category with a fixed exit code.

Library code raises these; only the CLI prints them and exits. Foreign
exceptions are translated at the boundary, keeping the original as
``__cause__``. Tests assert the category, never message text.
"""

from __future__ import annotations

import errno
import os
from enum import IntEnum


class Category(IntEnum):
    """Error categories; the value is the process exit code (compat.md)."""

    USAGE = 1
    INTERNAL = 2
    WAREHOUSE_UNAVAILABLE = 3
    WAREHOUSE_UNWRITABLE = 4
    WARE_NOT_FOUND = 5
    WARE_CORRUPT = 6
    HASH_MISMATCH = 7
    CANCELLED = 8
    CACHE = 9
    ASSEMBLY_INVALID = 10
    PACK_INVALID = 11
    INOPERABLE_PATH = 12
    FILTER_REJECTION = 13
    #: A write failed because its filesystem is full (ENOSPC) or over quota
    #: (EDQUOT), or a ware would write more than the disk limit for one ware.
    DISK_FULL = 14
    #: Not an error of repeatr's: the job ran and exited non-zero (``repeatr run``
    #: exits with this so make and shell loops stop; the record has the job's code).
    JOB_FAILED = 20
    JOB_INVALID = 40
    RUN_CACHE = 41
    EXECUTOR = 42

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


class RepeatrError(Exception):
    """Root of every error repeatr raises on purpose.

    ``message`` says what failed; ``hint`` (optional) says the likely fix.
    """

    category: Category = Category.INTERNAL

    def __init__(
        self, message: str, *, category: Category | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category
        self.message = message
        self.hint = hint

    @property
    def exit_code(self) -> int:
        return int(self.category)

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(RepeatrError):
    """Bad command line or bad formula: the user's input is wrong."""

    category = Category.USAGE


class FormulaError(UsageError):
    """A formula file that cannot be loaded; the message names file and field."""


class ModuleError(UsageError):
    """A module (``module.tl``), an import or a catalog is wrong; names the file and step."""


class FilesetError(RepeatrError):
    """Reading, hashing, packing or unpacking a fileset failed."""


class WarehouseError(RepeatrError):
    """Fetching from or saving to a warehouse failed."""


class CacheError(RepeatrError):
    """The local fileset cache is unusable or inconsistent."""

    category = Category.CACHE


class AssemblyError(RepeatrError):
    """The container filesystem cannot be assembled as asked."""

    category = Category.ASSEMBLY_INVALID


class ExecutorError(RepeatrError):
    """An executor is unavailable or failed to run the job."""

    category = Category.EXECUTOR


class JobInvalid(RepeatrError):
    """The job cannot start: bad exec or cwd."""

    category = Category.JOB_INVALID


#: The errnos that mean "the filesystem has no room": full, or over a quota.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException | None) -> bool:
    """True if ``exc`` (or what it was raised from) is a full disk or an exceeded quota."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc = exc.__cause__
        seen += 1
    return False


class DiskFull(RepeatrError):
    """A write failed for want of space; the message names the path and what was written.

    Raised from the OSError (ENOSPC, EDQUOT) at the boundary where the path
    is known (:meth:`of`), keeping it as ``__cause__``, or for a ware that
    would write more than the per-ware disk limit.
    """

    category = Category.DISK_FULL

    @classmethod
    def of(cls, exc: OSError, path: str | os.PathLike[str], doing: str) -> DiskFull:
        """``disk full: cannot <doing> <path>: <strerror>``, with a hint naming the filesystem."""
        where = os.fspath(path)
        reason = exc.strerror or os.strerror(exc.errno or errno.ENOSPC)
        return cls(
            f"disk full: cannot {doing} {where}: {reason}",
            hint=f"free space on the filesystem holding {where}, or use a larger one",
        )


class Cancelled(RepeatrError):
    """The run was cancelled by Ctrl-C, SIGTERM or SIGHUP."""

    category = Category.CANCELLED


class NetworkError(RepeatrError):
    """A run's network could not be prepared or torn down (netns, veth, bridge, IP index, NAT)."""

    category = Category.EXECUTOR


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error to report for a task group's failures.

    Parallel steps (fetching inputs, packing outputs) fail together; the user
    needs the first real error, not a tree. Our errors win over cancellation
    and foreign exceptions; the group stays attached as ``__context__``.
    """
    leaves = _leaves(group)
    for leaf in leaves:
        if isinstance(leaf, RepeatrError):
            return leaf
    for leaf in leaves:
        if not isinstance(leaf, KeyboardInterrupt | SystemExit):
            return leaf
    return leaves[0]
