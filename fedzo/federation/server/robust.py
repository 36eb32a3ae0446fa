"""Clipping against the running median of aggregated scalars (``aggregator_clip: running-median``).

Each client scalar is clipped to ``[-b, b]`` with ``b = clip_multiplier x median(|g|)``
over the aggregated scalars ``g`` of the last ``clip_window`` applied rounds; before
any round is applied the reference is the median of the current round's ``|scalars|``
over all clients (robust while fewer than half of them are Byzantine). Then the
configured aggregator (mean, median, trimmed-mean) runs on the clipped values.

``aggregator_clip: norm`` instead scales each client's scalars (as one vector) down to
``clip_multiplier x`` the round's median client norm: a client sending noise many times
the honest scale weighs no more than an honest one.

With ``federation.reputation`` the clients whose reputation from earlier rounds is low
(:mod:`fedzo.federation.server.reputation`) are left out before the aggregator runs.

The state is the aggregated scalars of recent rounds, which the update log stores
(``LogEntry.grad``), and the reputation votes, which it stores with each round;
:meth:`RobustAggregator.observe` is called for every applied round, also when a resumed
server replays its log, so the state of a resumed run equals the uninterrupted one's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fedzo.config.federation import FederationConfig
from fedzo.federation.server.aggregate import Contribution, make_aggregator
from fedzo.federation.server.reputation import Reputation, Vote, round_votes


class RobustAggregator:
    """The configured aggregator, optionally behind running-median clipping."""

    def __init__(self, name: str, *, trim_fraction: float = 0.1, clip: float | None = None,
                 mode: str = "none", multiplier: float = 3.0, window: int = 10,
                 reputation: Reputation | None = None) -> None:
        self.base = make_aggregator(name, trim_fraction=trim_fraction, clip=clip)
        self.reputation = reputation
        self.votes: dict[int, Vote] = {}  # the latest call's reputation votes
        self.left_out: list[int] = []  # clients the latest call left out (reputation)
        self.mode = mode
        self.multiplier = float(multiplier)
        self.history: deque[np.ndarray] = deque(maxlen=int(window))
        self.last_bound: float | None = None
        self.clipped = 0  # client scalars clipped in the latest call

    @classmethod
    def from_config(cls, fed: FederationConfig) -> RobustAggregator:
        """The seeds-and-scalars protocol's aggregator, from its federation settings."""
        return cls(fed.aggregator, trim_fraction=fed.trim_fraction, clip=fed.clip, mode=fed.aggregator_clip,
                   multiplier=fed.clip_multiplier, window=fed.clip_window,
                   reputation=Reputation(fed.reputation_threshold, fed.reputation_max_scale)
                   if fed.scores_clients(seeds_and_scalars=True) else None)

    def reference_scale(self, scalars: Iterable[Sequence[float]]) -> float:
        """The run's own scale of a scalar: the median |aggregated scalar| of the recent applied
        rounds; before any, the median |scalar| of this round's replies (``scalars``, one
        sequence per client: robust while fewer than half of them are Byzantine)."""
        if self.history:
            return float(np.median(np.abs(np.concatenate(list(self.history)))))
        vals = np.abs(np.concatenate([np.asarray(s, dtype=np.float64) for s in scalars] or [np.zeros(0)]))
        return float(np.median(vals)) if vals.size else 0.0

    def bound(self, contribs: Sequence[Contribution]) -> float | None:
        """The clip bound for this round (None: no running-median clipping)."""
        if self.mode != "running-median":
            return None
        ref = self.reference_scale(c.scalars for c in contribs)
        return self.multiplier * ref if ref > 0 else None

    def __call__(self, contribs: Sequence[Contribution], reference: Sequence[float] | None = None) -> tuple[float, ...]:
        """Aggregate per seed (after clipping and leaving out distrusted clients, when configured);
        ``reference``: the server's own scalars, the reputation's consensus when given."""
        contribs = sorted(contribs, key=lambda c: c.client)
        b = self.bound(contribs)
        self.last_bound, self.clipped = b, 0
        if b is not None:
            clipped = []
            for c in contribs:
                vals = np.clip(np.asarray(c.scalars, dtype=np.float64), -b, b)
                self.clipped += int(np.sum(vals != np.asarray(c.scalars, dtype=np.float64)))
                clipped.append(Contribution(c.client, c.num_examples, tuple(float(x) for x in vals)))
            contribs = clipped
        if self.mode == "norm":
            contribs = self._norm_clipped(contribs)
        self.clear()
        if self.reputation is not None:
            self.votes = round_votes(contribs, reference)
            self.left_out = self.reputation.distrusted([c.client for c in contribs], self.votes)
            contribs = [c for c in contribs if c.client not in self.left_out]
        return self.base(contribs)

    def clear(self) -> None:
        """Forget the latest call's votes and left-out clients (a round that aggregates nothing)."""
        self.votes, self.left_out = {}, []

    def _norm_clipped(self, contribs: Sequence[Contribution]) -> list[Contribution]:
        """Each client's scalars scaled down to ``multiplier x`` the round's median client norm."""
        norms = [float(np.linalg.norm(np.asarray(c.scalars, dtype=np.float64))) for c in contribs]
        bound = self.multiplier * float(np.median(norms)) if norms else 0.0
        self.last_bound = bound
        out = []
        for c, n in zip(contribs, norms, strict=True):
            if bound > 0 and n > bound:
                self.clipped += 1
                c = Contribution(c.client, c.num_examples, tuple(float(x) * (bound / n) for x in c.scalars))
            out.append(c)
        return out

    def observe(self, entries: Iterable[Any], votes: Mapping[int, Vote] | None = None) -> None:
        """Record an applied round: its aggregated scalars (``LogEntry.grad``; empty rounds are
        skipped) and its reputation votes."""
        grads = [float(e.grad) for e in entries if getattr(e, "grad", None) is not None]
        if grads:
            self.history.append(np.asarray(grads, dtype=np.float64))
        if self.reputation is not None and votes:
            self.reputation.observe(votes)
