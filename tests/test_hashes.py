"""``repeatr.hashes``: hashlib's digests, without importing hashlib's OpenSSL module."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from repeatr import hashes


@pytest.mark.parametrize("size", [0, 1, 55, 64, 127, 128, 1000, 70_000])
def test_the_same_digests_as_hashlib(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert hashes.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    assert hashes.sha384(data).digest() == hashlib.sha384(data).digest()


def test_importing_it_imports_no_openssl() -> None:
    probe = "import sys, repeatr.hashes; print(sorted({'hashlib', '_hashlib'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
