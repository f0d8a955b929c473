"""The tree hash of a fileset (compat.md "Tree hash"): what a ware ID names.

CONTRACT (stub, to be implemented):

class TreeHasher:
    def __init__(self, packtype: str = TAR) -> None
        packtype TAR: the original's hash (non-file entries add nothing to
        their parent: the quirk). TAR_STRICT: every entry's record hash is
        in its parent's child list.
    def add(self, entry: Entry, content_digest: bytes | None) -> None
        Entries in any order; content_digest is sha384(content) for FILE
        entries, None otherwise. Missing parents are inferred (0755, 0:0,
        mtime 1262304000); a later explicit entry replaces an inferred dir;
        a later explicit duplicate replaces the earlier one.
    def digest(self) -> bytes | None      # None when nothing was added
    def ware_id(self) -> WareID
"""
