"""Per-client reputation: how a client's scalars agree with the other clients', across
the seeds of a round and across rounds (``federation.reputation: true``).

For one direction seed the scalars of honest clients share the sign of the true
projected gradient, blurred by each client's own minibatch noise; a client that flips
its scalars (or sends noise) agrees with the others no better than chance, round after
round. One round's evidence is weak (on the tiny model an honest client agrees with the
others' median on about 54 % of the seeds), so votes add up over rounds.

A client's vote on seed ``j`` is ``sign(s_j) x t_j``, where ``t_j`` is the median of the
other clients' scalars for that seed in units of their spread (1.4826 x their median
absolute deviation), clipped to [-2, 2]: a seed on which the others clearly agree counts
more than one on which they do not. The client's reputation is the z-score
``sum(votes) / sqrt(sum(t_j^2))`` over every round it took part in: about 0 for noise,
positive for agreement, negative for a sign flip. A round leaves out the clients whose
reputation from *earlier* rounds is below the threshold (a client with no votes yet is
kept); votes of every valid reply are counted, so a client can recover.

The votes of each round are written to the update log with the round
(``meta["reputation"]``), and a resumed server sums them in the same order, so the
scores, and hence the run, are bitwise those of the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedzo.federation.aggregate import Contribution

CONSENSUS_CLIP = 2.0  # |t_j| at most: one clear seed cannot outvote many
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal


def round_votes(contribs: Sequence[Contribution]) -> dict[int, tuple[float, float]]:
    """Each client's (vote sum, weight sum) for this round; needs 3 or more clients."""
    if len(contribs) < 3:
        return {}
    vals = np.array([c.scalars for c in contribs], dtype=np.float64)  # (clients, seeds)
    out: dict[int, tuple[float, float]] = {}
    for i, c in enumerate(contribs):
        others = np.delete(vals, i, axis=0)
        med = np.median(others, axis=0)
        spread = MAD_TO_SIGMA * np.median(np.abs(others - med), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(spread > 0, np.clip(med / spread, -CONSENSUS_CLIP, CONSENSUS_CLIP), 0.0)
        out[c.client] = (float(np.sum(np.sign(vals[i]) * t)), float(np.sum(t * t)))
    return out


class Reputation:
    """Running vote and weight sums per client, and who a round leaves out."""

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = float(threshold)
        self.votes: dict[int, float] = {}
        self.weights: dict[int, float] = {}

    def score(self, client: int) -> float:
        """The client's z-score (0 before any vote)."""
        w = self.weights.get(client, 0.0)
        return self.votes.get(client, 0.0) / float(np.sqrt(w)) if w > 0 else 0.0

    def distrusted(self, clients: Sequence[int]) -> list[int]:
        """Those of ``clients`` whose score is below the threshold (none when that is all of them)."""
        out = [c for c in clients if self.weights.get(c, 0.0) > 0 and self.score(c) < self.threshold]
        return [] if len(out) == len(clients) else out

    def observe(self, votes: Mapping[int, tuple[float, float]]) -> None:
        """Add one round's votes (in client order, so a replay sums the same floats)."""
        for c in sorted(votes):
            v, w = votes[c]
            self.votes[c] = self.votes.get(c, 0.0) + float(v)
            self.weights[c] = self.weights.get(c, 0.0) + float(w)

    def scores(self) -> dict[int, float]:
        """Every scored client's z-score."""
        return {c: self.score(c) for c in sorted(self.weights)}


def votes_to_json(votes: Mapping[int, tuple[float, float]]) -> dict[str, list[float]]:
    """Votes as the update log stores them (JSON object keys are strings)."""
    return {str(c): [v, w] for c, (v, w) in sorted(votes.items())}


def votes_from_json(obj: Mapping[str, Sequence[float]]) -> dict[int, tuple[float, float]]:
    """Inverse of :func:`votes_to_json`."""
    return {int(c): (float(vw[0]), float(vw[1])) for c, vw in obj.items()}
