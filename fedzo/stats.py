"""Uncertainty of the figures fedzo reports: an accuracy measured on n examples is an
estimate of a proportion, and carries its 95 % Wilson score interval."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` observed on ``n`` trials.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 and 1
    (Wilson, 1927). ``n`` = 0 gives the whole range.
    """
    if n <= 0:
        return 0.0, 1.0
    p = min(max(accuracy, 0.0), 1.0)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
