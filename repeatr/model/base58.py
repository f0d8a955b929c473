"""Base58 with the Bitcoin alphabet, as the original's ware and formula IDs use."""

from __future__ import annotations

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def b58encode(data: bytes) -> str:
    """Encode bytes; each leading zero byte becomes ``1``."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Decode; raises ``ValueError`` naming the first character not in the alphabet."""
    num = 0
    for ch in text:
        try:
            num = num * 58 + _INDEX[ch]
        except KeyError:
            raise ValueError(f"{ch!r} is not a base58 character") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body
