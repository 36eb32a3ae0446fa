"""Parsing of human-written quantities: bytes ("6GB", "512 MiB") and bit rates ("20 Mbit/s")."""

from __future__ import annotations

import re

_BYTE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_RATE_UNITS: dict[str, float] = {
    "": 1.0, "bps": 1.0, "bit/s": 1.0,
    "kbps": 1e3, "kbit/s": 1e3, "mbps": 1e6, "mbit/s": 1e6, "gbps": 1e9, "gbit/s": 1e9,
}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z/]*)\s*$")


def parse_bytes(value: float | str) -> int:
    """Bytes from an int or a string such as "6GB" (10^9) or "6GiB" (2^30).

    Raises ``ValueError`` naming the accepted units.
    """
    if isinstance(value, bool):
        raise ValueError("is not a byte size")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, int | float):
        return int(value)
    match = _QUANTITY.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError("is not a byte size (a number, optionally followed by B, kB, MB, GB, "
                         "TB, KiB, MiB, GiB or TiB)")
    return int(float(match.group(1)) * _BYTE_UNITS[unit])


def parse_bitrate(value: float | str) -> float:
    """Bits per second from a number or a string such as "20 Mbit/s" or "1Gbps"."""
    if isinstance(value, bool):
        raise ValueError("is not a bit rate")  # noqa: TRY004 (pydantic reports ValueError)
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _RATE_UNITS:
        raise ValueError("is not a bit rate (a number of bit/s, optionally followed by kbps, "
                         "Mbps, Gbps, kbit/s, Mbit/s or Gbit/s)")
    return float(match.group(1)) * _RATE_UNITS[unit]


def format_bytes(n: float) -> str:
    """Human-readable decimal size: 1234567 -> '1.23 MB'."""
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
