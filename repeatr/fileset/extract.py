"""Safe extraction: every write is directory-fd-relative, no-follow, create-exclusive.

CONTRACT (stub, to be implemented):

class SafeWriter:
    def __init__(self, root: Path, *, limits: Limits) -> None
        root is an existing, empty directory owned by us; nothing is ever
        written outside it.
    def write(self, entry: Entry, blocks: Iterable[bytes]) -> None
        Creates one entry (already filtered, name already cleaned). Parent
        dirs are opened one component at a time with O_NOFOLLOW|O_DIRECTORY
        relative to their parent's fd; a parent that is a symlink (from the
        archive or on disk) is rejected. Files: O_CREAT|O_EXCL|O_NOFOLLOW.
        Symlink targets are stored, never followed. Raises FilesetError
        naming the member.
    def finish(self) -> None
        Applies deferred directory modes and mtimes, deepest first.
    def close(self) -> None  (also a context manager)
"""
