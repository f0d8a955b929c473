"""Human sizes: ``64M``, ``1.5G``, ``4096``: binary multiples, as ``du``/``df`` print them."""

from __future__ import annotations

from repeatr.errors import UsageError

_MULTIPLIERS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """Bytes from ``N``, ``N[KMGT]``, ``N[KMGT]i?B``; raises UsageError naming ``what``."""
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = raw[-1:] if raw[-1:] in _MULTIPLIERS else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value < 0 or not number:
        raise UsageError(f"{what}: invalid size {text!r} (expected e.g. 512M, 2G or a byte count)")
    return int(value * _MULTIPLIERS[unit])


def format_size(n: int) -> str:
    """The shortest exact-enough human form: ``1.5G``, ``12M``, ``900``."""
    for unit in ("T", "G", "M", "K"):
        mult = _MULTIPLIERS[unit]
        if n >= mult:
            value = n / mult
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return str(n)
