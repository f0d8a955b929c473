"""The tree hash of a fileset (compat.md "Tree hash"): what a ware ID names.

The hash is of the *fileset*, not of the archive bytes, so entries may be
added in any order: they are collected, then sorted and folded in
:meth:`TreeHasher.digest`.

Rules (each reproduces the original's published IDs; the vectors are in
``tests/fileset/test_treehash.py``):

* Sort key: ``"./" + name`` with ``"/"`` appended for directories, compared
  bytewise on UTF-8 (surrogate escapes give back the raw bytes). The sorted
  list is a depth-first preorder walk in which each directory's children are
  ordered by ``basename + ("/" if dir)``; so file ``a.txt`` comes before dir
  ``a/`` while ``a-b`` comes before ``a/`` too.
* META: a definite CBOR map, keys in the fixed order
  ``n t p u g [l] [dM dm] m mn [x]``; ``n`` is the basename (``"."`` for the
  root), ``l`` only when the link target is non-empty, ``dM``/``dm`` only for
  block and char devices, ``x`` only when there are xattrs (keys sorted
  bytewise; values written as CBOR *text* holding the raw bytes, which is how
  the original's Go ``map[string]string`` encodes).
* A regular file's record hash: ``sha384(map{"m": META, "h": bytes(sha384(content))})``.
* A directory's record hash: ``sha384(map{"m": META, "l": [_ child hashes ]})``
  where the child list is an indefinite-length array of byte strings.
* Every other entry (symlink, hardlink, fifo, device, socket):

  - packtype ``tar`` (the original's quirk): contributes **nothing** to its
    parent's child list; changing a symlink does not change the ID.
  - packtype ``tar-strict`` (ours): contributes its *record hash*
    ``sha384(map{"m": META})`` (a one-entry map), so every entry and all of
    its metadata is covered.

* Missing parents (and the root, when an archive has no ``./`` entry) are
  inferred as dirs 0755, uid 0, gid 0, mtime 1262304000, ns 0. A later
  explicit entry replaces an inferred one, and a later explicit duplicate
  replaces an earlier one (tar semantics: the last header wins).
* An entry that has children but is not a directory (file ``a`` and entry
  ``a/b``) is a corrupt fileset: ``FilesetError(WARE_CORRUPT)``.
* **A single-file fileset**: the root ``"."`` may be a regular file, alone.
  Its tree hash is its record hash (``n`` is ``"."``), as the original's
  bucket hash gives for a tar holding one entry named ``.`` (what rio packs
  for a path that is a file). A root of any other type is corrupt.
"""

from __future__ import annotations

import hashlib

from repeatr.errors import Category, FilesetError
from repeatr.fileset.entry import Entry, EntryType
from repeatr.model import cbor
from repeatr.model.filters import DEFAULT_MTIME
from repeatr.model.wareid import TAR, TAR_STRICT, WareID

__all__ = ["TreeHasher", "meta_cbor", "record_hash"]

_sha384 = hashlib.sha384

# Pre-encoded pieces: META is built for every entry, so avoid re-encoding
# constant keys and small ints each time.
_K_N = cbor.enc_text("n")
_K_T = cbor.enc_text("t")
_K_P = cbor.enc_text("p")
_K_U = cbor.enc_text("u")
_K_G = cbor.enc_text("g")
_K_L = cbor.enc_text("l")
_K_DMAJ = cbor.enc_text("dM")
_K_DMIN = cbor.enc_text("dm")
_K_M = cbor.enc_text("m")
_K_MN = cbor.enc_text("mn")
_K_X = cbor.enc_text("x")
_K_H = cbor.enc_text("h")
_TYPE = {t: cbor.enc_text(t.value) for t in EntryType}
# Modes (<= 0o7777) and common ids; a bigger table cost ~20 ms at every import.
_SMALL = [cbor.enc_int(i) for i in range(1 << 12)]
_DIGEST_HEAD = cbor.enc_bytes(b"\0" * 48)[:2]  # 0x58 0x30: a 48-byte byte string
_ROOT_NAME = cbor.enc_text(".")

_FILE_PREFIX = cbor.map_head(2) + _K_M  # then META, "h", bytes(digest)
_DIR_PREFIX = cbor.map_head(2) + _K_M  # then META, "l", 0x9f ... 0xff
_RECORD_PREFIX = cbor.map_head(1) + _K_M  # then META
_L_INDEF = _K_L + cbor.INDEF_ARRAY_START
_H_DIGEST = _K_H + _DIGEST_HEAD


def _int(value: int) -> bytes:
    if 0 <= value < 4096:
        return _SMALL[value]
    return cbor.enc_int(value)


def meta_cbor(entry: Entry) -> bytes:
    """The META map of one entry, exactly as the original encodes it."""
    name = entry.name
    etype = entry.type
    optional = 0
    if entry.linkname:
        optional += 1
    is_dev = etype is EntryType.BLOCK or etype is EntryType.CHAR
    if is_dev:
        optional += 2
    if entry.xattrs:
        optional += 1
    n = _ROOT_NAME if name == "." else cbor.enc_text(name.rpartition("/")[2])
    parts = [
        cbor.map_head(7 + optional),
        _K_N,
        n,
        _K_T,
        _TYPE[etype],
        _K_P,
        _int(entry.mode & 0o7777),
        _K_U,
        _int(entry.uid),
        _K_G,
        _int(entry.gid),
    ]
    if entry.linkname:
        parts += (_K_L, cbor.enc_text(entry.linkname))
    if is_dev:
        parts += (_K_DMAJ, _int(entry.devmajor), _K_DMIN, _int(entry.devminor))
    parts += (_K_M, _int(entry.mtime), _K_MN, _int(entry.mtime_ns))
    if entry.xattrs:
        items = sorted(
            (k.encode("utf-8", "surrogateescape"), v) for k, v in entry.xattrs.items()
        )
        parts += (_K_X, cbor.map_head(len(items)))
        for key, value in items:
            parts += (cbor.head(3, len(key)), key, cbor.head(3, len(value)), value)
    return b"".join(parts)


def record_hash(entry: Entry, content_digest: bytes | None = None) -> bytes:
    """Hash of one non-directory entry's record (a dir needs its children).

    Files: ``sha384(map{"m": META, "h": digest})``; anything else (the
    strict packtype's record): ``sha384(map{"m": META})``.
    """
    if entry.type is EntryType.FILE:
        if content_digest is None:
            raise ValueError(f"file entry {entry.name!r} needs its content digest")
        return _sha384(
            _FILE_PREFIX + meta_cbor(entry) + _H_DIGEST + content_digest
        ).digest()
    return _sha384(_RECORD_PREFIX + meta_cbor(entry)).digest()


def _inferred_dir(name: str) -> Entry:
    return Entry(name=name, type=EntryType.DIR, mode=0o755, mtime=DEFAULT_MTIME)


def _sort_key(name: str, is_dir: bool) -> bytes:
    if name == ".":
        return b"./"
    raw = name.encode("utf-8", "surrogateescape")
    return b"./" + raw + b"/" if is_dir else b"./" + raw


class TreeHasher:
    """Collects entries (any order), then folds them into the tree hash."""

    __slots__ = ("_entries", "_inferred", "_strict", "packtype")

    def __init__(self, packtype: str = TAR) -> None:
        if packtype not in (TAR, TAR_STRICT):
            raise FilesetError(
                f"unknown packtype {packtype!r} (known: {TAR}, {TAR_STRICT})",
                category=Category.USAGE,
            )
        self.packtype = packtype
        self._strict = packtype == TAR_STRICT
        # name -> (entry, content digest or None)
        self._entries: dict[str, tuple[Entry, bytes | None]] = {}
        self._inferred: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry, content_digest: bytes | None) -> None:
        """Add one entry; ``content_digest`` is sha384(content) for FILE entries.

        ``entry.name`` must already be clean (no ``./`` prefix, no trailing
        ``/``, the root is ``"."``); the reader and the packer guarantee it.
        """
        if entry.type is EntryType.FILE and content_digest is None:
            raise ValueError(f"file entry {entry.name!r} needs its content digest")
        entries = self._entries
        name = entry.name
        entries[name] = (entry, content_digest)
        inferred = self._inferred
        if inferred:
            inferred.discard(name)
        # Infer missing parents, stopping at the first one already known
        # (its own ancestors are then known too).
        while name != ".":
            parent = name.rpartition("/")[0] or "."
            if parent in entries:
                break
            entries[parent] = (_inferred_dir(parent), None)
            inferred.add(parent)
            name = parent

    def digest(self) -> bytes | None:
        """The SHA-384 tree hash, or None when nothing was added."""
        entries = self._entries
        if not entries:
            return None
        strict = self._strict
        dir_t = EntryType.DIR
        file_t = EntryType.FILE
        keyed = sorted(
            (_sort_key(name, rec[0].type is dir_t), name, rec)
            for name, rec in entries.items()
        )
        # Stack of open directories: (name, META bytes, child hash list).
        stack: list[tuple[str, bytes, list[bytes]]] = []
        result: bytes | None = None

        def close_top() -> bytes:
            _name, meta, children = stack.pop()
            body = b"".join(_DIGEST_HEAD + child for child in children)
            return _sha384(
                _DIR_PREFIX + meta + _L_INDEF + body + cbor.BREAK
            ).digest()

        root_entry, root_content = entries["."]
        if root_entry.type is file_t:
            if len(entries) > 1:
                raise FilesetError(
                    "the root of the fileset is a file, yet the fileset has other entries"
                    f" ({keyed[1][1]!r})",
                    category=Category.WARE_CORRUPT,
                )
            return record_hash(root_entry, root_content)
        for _key, name, (entry, content) in keyed:
            if name == ".":
                if entry.type is not dir_t:
                    raise FilesetError(
                        f"the root of the fileset is a {entry.type.name.lower()},"
                        " not a directory or a file",
                        category=Category.WARE_CORRUPT,
                    )
                stack.append((name, meta_cbor(entry), []))
                continue
            parent = name.rpartition("/")[0] or "."
            while stack[-1][0] != parent:
                done = close_top()
                if not stack:
                    # Preorder: a directory parent is always open here, so
                    # this parent is a file, link or device with children.
                    raise FilesetError(
                        f"entry {name!r}: its parent {parent!r} is not a directory",
                        category=Category.WARE_CORRUPT,
                    )
                stack[-1][2].append(done)
            etype = entry.type
            if etype is dir_t:
                stack.append((name, meta_cbor(entry), []))
            elif etype is file_t:
                stack[-1][2].append(
                    _sha384(_FILE_PREFIX + meta_cbor(entry) + _H_DIGEST + content).digest()  # type: ignore[operator]
                )
            elif strict:
                stack[-1][2].append(_sha384(_RECORD_PREFIX + meta_cbor(entry)).digest())
        while stack:
            result = close_top()
            if stack:
                stack[-1][2].append(result)
        return result

    def ware_id(self) -> WareID:
        return WareID.from_digest(self.packtype, self.digest())
