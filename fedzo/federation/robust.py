"""Clipping against the running median of aggregated scalars (``aggregator_clip: running-median``).

Each client scalar is clipped to ``[-b, b]`` with ``b = clip_multiplier x median(|g|)``
over the aggregated scalars ``g`` of the last ``clip_window`` applied rounds; before
any round is applied the reference is the median of the current round's ``|scalars|``
over all clients (robust while fewer than half of them are Byzantine). Then the
configured aggregator (mean, median, trimmed-mean) runs on the clipped values.

The state is only the aggregated scalars of recent rounds, which the update log
stores (``LogEntry.grad``); :meth:`RobustAggregator.observe` is called for every
applied round, also when a resumed server replays its log, so the state of a resumed
run equals the uninterrupted one's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fedzo.federation.aggregate import Contribution, make_aggregator


class RobustAggregator:
    """The configured aggregator, optionally behind running-median clipping."""

    def __init__(self, name: str, *, trim_fraction: float = 0.1, clip: float | None = None,
                 mode: str = "none", multiplier: float = 3.0, window: int = 10) -> None:
        self.base = make_aggregator(name, trim_fraction=trim_fraction, clip=clip)
        self.mode = mode
        self.multiplier = float(multiplier)
        self.history: deque[np.ndarray] = deque(maxlen=int(window))
        self.last_bound: float | None = None
        self.clipped = 0  # client scalars clipped in the latest call

    @classmethod
    def from_config(cls, fed: Any) -> RobustAggregator:
        """From a :class:`~fedzo.config.federation.FederationConfig`."""
        return cls(fed.aggregator, trim_fraction=fed.trim_fraction, clip=fed.clip,
                   mode=getattr(fed, "aggregator_clip", "none"),
                   multiplier=getattr(fed, "clip_multiplier", 3.0), window=getattr(fed, "clip_window", 10))

    def bound(self, contribs: Sequence[Contribution]) -> float | None:
        """The clip bound for this round (None: no running-median clipping)."""
        if self.mode != "running-median":
            return None
        if self.history:
            ref = float(np.median(np.abs(np.concatenate(list(self.history)))))
        else:
            vals = np.abs(np.array([c.scalars for c in contribs], dtype=np.float64))
            ref = float(np.median(vals)) if vals.size else 0.0
        return self.multiplier * ref if ref > 0 else None

    def __call__(self, contribs: Sequence[Contribution]) -> tuple[float, ...]:
        """Aggregate per seed (after clipping, when configured)."""
        b = self.bound(contribs)
        self.last_bound, self.clipped = b, 0
        if b is not None:
            clipped = []
            for c in contribs:
                vals = np.clip(np.asarray(c.scalars, dtype=np.float64), -b, b)
                self.clipped += int(np.sum(vals != np.asarray(c.scalars, dtype=np.float64)))
                clipped.append(Contribution(c.client, c.num_examples, tuple(float(x) for x in vals)))
            contribs = clipped
        return self.base(contribs)

    def observe(self, entries: Iterable[Any]) -> None:
        """Record an applied round's aggregated scalars (``LogEntry.grad``); empty rounds are skipped."""
        grads = [float(e.grad) for e in entries if getattr(e, "grad", None) is not None]
        if grads:
            self.history.append(np.asarray(grads, dtype=np.float64))
