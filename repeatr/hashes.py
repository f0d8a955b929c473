"""SHA-256 and SHA-384 of small inputs, without importing ``hashlib``.

``hashlib`` imports OpenSSL's module (``_hashlib``): 3–5 ms here, a tenth
of a memo hit (which hashes the formula file) and paid again by every
``repeatr run`` (the formula's ID, the memo key, the seccomp profile's and
the network's names). CPython's own implementations, ``_sha256`` and
``_sha512`` (what ``hashlib`` falls back to without OpenSSL), import in
~0.3 ms and give the same digests; OpenSSL is faster only on large data,
and these inputs are a formula or a name, a few kB at most. Large data
(wares, files) goes through ``hashlib`` where it is hashed.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _hashlib import HASH

    def sha256(data: bytes = b"", /) -> HASH: ...

    def sha384(data: bytes = b"", /) -> HASH: ...

else:
    from _sha256 import sha256
    from _sha512 import sha384

__all__ = ["sha256", "sha384"]
