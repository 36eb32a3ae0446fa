"""Units: parsing human-written quantities (bytes such as "6GB" or "512 MiB", bit rates such
as "20 Mbit/s") and formatting bytes, memory, durations and parameter counts.

Communicated bytes use decimal prefixes (kB, MB, GB) like network figures; device
memory uses binary prefixes (KiB, MiB, GiB) like memory budgets.
"""

from __future__ import annotations

import math
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


_DECIMAL = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))
_BINARY = ((2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"))


def _scaled(value: float, steps: tuple[tuple[float, str], ...], unit: str) -> str:
    for factor, name in steps:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {name}"
    return f"{value:.0f} {unit}"


def format_bytes(value: float | None) -> str:
    """Communicated bytes, decimal prefixes: ``1234567 -> '1.23 MB'``; None -> '–'."""
    if value is None or not math.isfinite(value):
        return "–"
    return _scaled(float(value), _DECIMAL, "B")


def format_memory(value: float | None) -> str:
    """Memory bytes, binary prefixes: ``612000000 -> '584 MiB'``; None -> '–'."""
    if value is None or not math.isfinite(value):
        return "–"
    return _scaled(float(value), _BINARY, "B")


def format_params(value: float | None) -> str:
    """Parameter count: ``134515008 -> '135M'``; None -> '?'."""
    if value is None or not math.isfinite(value):
        return "?"
    for factor, name in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.3g}{name}"
    return f"{value:.0f}"


def format_duration(seconds: float | None) -> str:
    """A duration in the largest fitting unit: ``812.4 -> '13.5 min'``; None -> '–'."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    unit, scale = time_unit(seconds)
    return f"{seconds / scale:.3g} {unit}"


def time_unit(max_seconds: float) -> tuple[str, float]:
    """The axis unit for times up to ``max_seconds``: ``(name, seconds per unit)``.

    Seconds below 2 minutes, minutes below 2 hours, hours above.
    """
    if max_seconds >= 7200:
        return "h", 3600.0
    if max_seconds >= 120:
        return "min", 60.0
    return "s", 1.0


def format_accuracy(value: float | None) -> str:
    """An accuracy fraction as a percentage: ``0.7412 -> '74.12 %'``; None -> '–'."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100.0 * value:.2f} %"


def format_interval(value: object) -> str:
    """A (low, high) accuracy interval as percentages: ``(0.79, 0.92) -> '79.0-92.2 %'``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return "–"
    low, high = (float(v) for v in value)
    return f"{100 * low:.1f}-{100 * high:.1f} %"
