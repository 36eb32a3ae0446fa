"""Per-seed aggregation of the clients' projected gradients: pure functions, no network.

Input is a list of valid replies, each ``(client, num_examples, scalars)`` with the same
number of scalars (one per direction of the round, in seed order). Replies are sorted by
client id first, so the float result never depends on arrival order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from flwr.app import RecordDict

from fedzo.errors import ConfigError
from fedzo.federation.messages import Expected, MessageError, Uplink, parse_uplink


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


def make_aggregator(name: str, *, trim_fraction: float = 0.1, clip: float | None = None) -> Aggregator:
    """An aggregator by registry name; unknown names list the valid ones."""
    if name == "mean":
        return lambda c: weighted_mean(c, clip)
    if name == "median":
        return lambda c: median(c, clip)
    if name == "trimmed-mean":
        return lambda c: trimmed_mean(c, trim_fraction, clip)
    raise ConfigError(f"aggregator: {name!r} is not known; allowed: mean, median, trimmed-mean")


@dataclass(frozen=True)
class ReplyCheck:
    """The valid replies of a round and why the others were rejected."""

    uplinks: dict[int, Uplink]  # client -> parsed reply
    rejected: dict[int, str]  # client -> reason code (schema error code, or "failed")
    reasons: dict[int, str]  # client -> human-readable reason

    def contributions(self) -> list[Contribution]:
        """Valid replies as aggregation inputs, sorted by client."""
        return [Contribution(c, u.num_examples, u.scalars) for c, u in sorted(self.uplinks.items())]


def validate_replies(replies: Mapping[int, RecordDict | Exception],
                     expected: Mapping[int, Expected]) -> ReplyCheck:
    """Parse every reply against what its client was sent; invalid ones are counted, not raised.

    ``replies`` maps client -> reply content, or the error the client reported.
    """
    ok: dict[int, Uplink] = {}
    rejected: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for client in sorted(replies):
        reply = replies[client]
        if isinstance(reply, Exception):
            rejected[client], reasons[client] = "failed", str(reply)
            continue
        try:
            ok[client] = parse_uplink(reply, expected[client])
        except MessageError as exc:
            rejected[client], reasons[client] = exc.code, str(exc)
    return ReplyCheck(ok, rejected, reasons)
