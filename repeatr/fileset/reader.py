"""Reading archives: any of gzip, bzip2, xz, zstd or plain tar, as a stream of entries.

CONTRACT (stub, to be implemented):

class Member:
    entry: Entry              # name cleaned ("./x" == "x", root "."); absolute
                              # names and ".." escapes raise FilesetError
                              # (WARE_CORRUPT) naming the member
    def blocks(self) -> Iterator[bytes]   # content of a FILE entry; empty otherwise

def read_archive(stream: BinaryIO) -> ContextManager[Iterator[Member]]
    Detects compression from the first bytes. PAX global headers skipped,
    mtime ns from PAX mtime, xattrs from SCHILY.xattr.*. A malformed archive
    raises FilesetError(WARE_CORRUPT).
"""
