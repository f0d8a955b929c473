"""Pack a directory into a gzip'd tar ware, hashing as it goes.

CONTRACT (stub, to be implemented):

def pack_dir(path: Path, out: BinaryIO | None, *, filters: Filters,
             packtype: str = TAR, progress: Callable[[int], None] | None = None) -> WareID
    Walks with lstat, children sorted; applies filters (setid/dev=reject
    raise FilesetError FILTER_REJECTION naming the path); truncates mtime to
    seconds; no xattrs. Entry names "./path" with "/" on dirs. Writes gzip
    to out (None: hash only). A path that does not exist gives "<packtype>:-"
    and writes nothing.

def scan_stream(stream: BinaryIO, *, packtype: str = TAR) -> WareID
    Tree hash of an archive without extracting it (fileset/scan).
"""
