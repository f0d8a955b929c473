"""Warehouses: where wares are fetched from and saved to, named by URL.

CONTRACT (stub, to be implemented):

class Warehouse(ABC):
    url: str
    def open_ware(self, ware: WareID) -> ContextManager[BinaryIO]
        Raises WarehouseError: WARE_NOT_FOUND when the warehouse answered
        but has no such ware, WAREHOUSE_UNAVAILABLE when it could not be
        reached/read.
    def start_save(self) -> ContextManager[SaveSession]
        SaveSession.file: a writable binary file (a temp file inside the
        target, or a spool for HTTP); SaveSession.commit(ware: WareID) puts
        it into place (rename) - call only after the hash is verified;
        leaving the context without commit removes the temp file.
        Raises WarehouseError(WAREHOUSE_UNWRITABLE) for read-only kinds.

def warehouse_for(url: str) -> Warehouse         # UsageError for unknown schemes
def open_from_sources(ware: WareID, urls: Sequence[str]) -> ContextManager[tuple[str, BinaryIO]]
    Tries in order; not-found / unavailable moves on. The final error is
    WARE_NOT_FOUND if every source answered "not there", else
    WAREHOUSE_UNAVAILABLE; its message lists every source and what it said.
"""
