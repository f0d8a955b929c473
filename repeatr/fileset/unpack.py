"""Unpack a ware stream into a directory, verifying its hash before anything is visible.

CONTRACT (stub, to be implemented):

@dataclass(frozen=True)
class UnpackResult:
    ware_id: WareID          # hash before filters (what was verified)
    filtered_id: WareID      # hash after filters (what is on disk)
    strict_id: WareID        # TAR_STRICT hash after filters: covers every entry on disk
    entries: int
    bytes: int               # content bytes written

def unpack_stream(stream: BinaryIO, dest: Path, *, expected: WareID | None,
                  filters: Filters, limits: Limits = Limits(),
                  progress: Callable[[int], None] | None = None) -> UnpackResult
    dest must not exist; its parent must. Extracts into a fresh temp dir
    beside dest (name starts with ".repeatr-tmp-"), checks the pre-filter
    hash against expected (mismatch: FilesetError HASH_MISMATCH, exit 7),
    then renames the temp dir to dest. On any error the temp dir is removed
    and dest does not exist. progress(n) is called with content bytes read
    so far (throttled).
"""
