"""The fileset cache: each ware unpacked once per host into a read-only shelf.

CONTRACT (stub, to be implemented):

class Cache:
    def __init__(self, root: Path) -> None      # default root /var/lib/repeatr (REPEATR_CACHE, --cache)
    def shelf(self, ware: WareID, sources: Sequence[str]) -> ContextManager[Path]
        Ensures the ware is unpacked (exactly once across processes: a
        per-ware flock), holds an in-use mark (shared flock) while the
        context is open so gc never removes it, yields the shelf path.
    def ls(self) -> list[ShelfInfo]             # ware, size, last used, in use?
    def gc(self, max_size: int) -> list[ShelfInfo]   # removed; LRU first; never in-use shelves
    def verify(self) -> list[problem]           # re-hash every shelf against its strict ID
"""
