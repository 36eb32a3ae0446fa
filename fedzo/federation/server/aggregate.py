"""Per-seed aggregation of the clients' projected gradients: pure functions, no network.

Input is a list of valid replies, each ``(client, num_examples, scalars)`` with the same
number of scalars (one per direction of the round, in seed order). Replies are sorted by
client id first, so the float result never depends on arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedzo.errors import ConfigError
from fedzo.registry import Registry


@dataclass(frozen=True)
class Contribution:
    """One client's scalars for the round (already validated)."""

    client: int
    num_examples: int
    scalars: tuple[float, ...]


def _matrix(contribs: Sequence[Contribution], clip: float | None) -> tuple[np.ndarray, np.ndarray]:
    if not contribs:
        raise ValueError("no contributions to aggregate")
    ordered = sorted(contribs, key=lambda c: c.client)
    widths = {len(c.scalars) for c in ordered}
    if len(widths) != 1:
        raise ValueError(f"contributions have different scalar counts {sorted(widths)}")
    vals = np.array([c.scalars for c in ordered], dtype=np.float64)  # (clients, K*q)
    if clip is not None:
        vals = np.clip(vals, -clip, clip)
    weights = np.array([c.num_examples for c in ordered], dtype=np.float64)  # (clients,)
    return vals, weights


def weighted_mean(contribs: Sequence[Contribution], clip: float | None = None) -> tuple[float, ...]:
    """Per-seed mean weighted by example count."""
    vals, w = _matrix(contribs, clip)
    return tuple(float(x) for x in (w[:, None] * vals).sum(axis=0) / w.sum())


def median(contribs: Sequence[Contribution], clip: float | None = None) -> tuple[float, ...]:
    """Per-seed median (unweighted; robust to a minority of outliers)."""
    vals, _ = _matrix(contribs, clip)
    return tuple(float(x) for x in np.median(vals, axis=0))


def trimmed_mean(contribs: Sequence[Contribution], fraction: float = 0.1,
                 clip: float | None = None) -> tuple[float, ...]:
    """Per-seed mean after dropping ``floor(fraction * n)`` values at each end."""
    if not 0 <= fraction < 0.5:
        raise ConfigError(f"trim_fraction: {fraction!r} is not allowed; allowed: 0 <= fraction < 0.5")
    vals, _ = _matrix(contribs, clip)
    cut = math.floor(fraction * vals.shape[0])
    kept = np.sort(vals, axis=0)[cut: vals.shape[0] - cut]
    return tuple(float(x) for x in kept.mean(axis=0))


Aggregator = Callable[[Sequence[Contribution]], tuple[float, ...]]
AggregatorFactory = Callable[[float, "float | None"], Aggregator]  # (trim_fraction, clip) -> aggregator

AGGREGATORS: Registry[AggregatorFactory] = Registry("aggregator", "federation.aggregator")
AGGREGATORS.add("mean", lambda trim, clip: lambda c: weighted_mean(c, clip))
AGGREGATORS.add("median", lambda trim, clip: lambda c: median(c, clip))
AGGREGATORS.add("trimmed-mean", lambda trim, clip: lambda c: trimmed_mean(c, trim, clip))


def make_aggregator(name: str, *, trim_fraction: float = 0.1, clip: float | None = None) -> Aggregator:
    """An aggregator by registry name; unknown names list the valid ones."""
    return AGGREGATORS.get(name)(trim_fraction, clip)
