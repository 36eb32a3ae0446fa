"""Per-client reputation: how a client's scalars agree with the other clients', across
the seeds of a round and across rounds (``federation.reputation: true``).

Two kinds of evidence are summed over every round a client took part in:

- **Direction.** For one direction seed the scalars of honest clients share the sign of
  the true projected gradient, blurred by each client's own minibatch noise; a client
  that flips its scalars agrees with the others less often than chance, round after
  round. A client's vote on seed ``j`` is ``sign(s_j) x t_j``, where ``t_j`` is the median
  of the other clients' scalars for that seed in units of their spread (1.4826 x their
  median absolute deviation), clipped to [-2, 2]: a seed on which the others clearly
  agree counts more. The direction score is the z-score
  ``sum(votes) / sqrt(sum(t_j^2))``: about 0 for noise, positive for agreement, negative
  for a flip. With ``federation.reputation_reference: server`` the consensus is instead the
  server's own scalars for the round's seeds on a root set it holds
  (:mod:`fedzo.federation.server.reference`, as FLTrust): ``t_j = sign(r_j)``, which does not
  weaken as the share of attackers grows. One round's evidence is weak (on the tiny model an honest client agrees
  with the others' median on about 54 % of the seeds), so the default threshold is
  -1: only clients whose scalars point *against* the others' with some confidence are
  left out, and honest clients, whose scores wander around small positive values early
  on, are rarely dropped (dropping them costs more than it saves: measured).
- **Scale.** ``log(norm / median norm of the others)`` of the client's scalars per
  round; a client whose scalars are on average (geometrically, this round included) more
  than ``reputation_max_scale`` times the others' is left out: noise many times the
  honest scale is caught in the round it is first sent (an honest client's norm exceeds 3x
  the others' median in about 1 % of its rounds on the tiny model).

A round leaves out the clients whose direction score from *earlier* rounds is below the
threshold (this round's own votes would favour whoever agrees with the consensus now),
or whose scale, this round included, is too large; never every client. Votes of every valid reply
are counted, so a client can recover. The votes of each round are written to the update
log with the round (``meta["reputation"]``), and a resumed server sums them in the same
order, so the scores, and hence the run, are bitwise those of the uninterrupted run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedzo.federation.server.aggregate import Contribution

CONSENSUS_CLIP = 2.0  # |t_j| at most: one clear seed cannot outvote many
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal

Vote = tuple[float, float, float]  # (direction votes, their weight, log scale ratio) of one client-round


def round_votes(contribs: Sequence[Contribution], reference: Sequence[float] | None = None) -> dict[int, Vote]:
    """Each client's vote for this round. Without ``reference`` a seed's consensus is the
    other clients' median (3 or more clients needed); with it (the server's own scalars for
    the round's seeds, :mod:`fedzo.federation.server.reference`), ``t_j = sign(reference_j)`` for
    every client, and the scale test needs 3 or more clients."""
    if len(contribs) < 3 and reference is None:
        return {}
    vals = np.array([c.scalars for c in contribs], dtype=np.float64)  # (clients, seeds)
    norms = np.linalg.norm(vals, axis=1)
    out: dict[int, Vote] = {}
    server = None if reference is None else np.sign(np.asarray(reference, dtype=np.float64))
    for i, c in enumerate(contribs):
        if server is not None:
            t = server
        else:
            others = np.delete(vals, i, axis=0)
            med = np.median(others, axis=0)
            spread = MAD_TO_SIGMA * np.median(np.abs(others - med), axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(spread > 0, np.clip(med / spread, -CONSENSUS_CLIP, CONSENSUS_CLIP), 0.0)
        ref = float(np.median(np.delete(norms, i))) if len(contribs) >= 3 else 0.0
        scale = math.log(norms[i] / ref) if norms[i] > 0 and ref > 0 else 0.0
        out[c.client] = (float(np.sum(np.sign(vals[i]) * t)), float(np.sum(t * t)), scale)
    return out


class Reputation:
    """Running sums of each client's votes, and who a round leaves out."""

    def __init__(self, threshold: float = -1.0, max_scale: float = 3.0) -> None:
        self.threshold = float(threshold)
        self.max_log_scale = math.log(max_scale)
        self.votes: dict[int, float] = {}
        self.weights: dict[int, float] = {}
        self.log_scale: dict[int, float] = {}
        self.rounds: dict[int, int] = {}

    def score(self, client: int) -> float:
        """The client's direction z-score (0 before any vote)."""
        w = self.weights.get(client, 0.0)
        return self.votes.get(client, 0.0) / math.sqrt(w) if w > 0 else 0.0

    def scale(self, client: int) -> float:
        """Geometric mean over its rounds of the client's norm / the others' median norm (1 before any)."""
        n = self.rounds.get(client, 0)
        return math.exp(self.log_scale[client] / n) if n else 1.0

    def _bad(self, client: int, now: Vote | None) -> bool:
        low = self.weights.get(client, 0.0) > 0 and self.score(client) < self.threshold
        n = self.rounds.get(client, 0) + (now is not None)
        log_scale = self.log_scale.get(client, 0.0) + (now[2] if now is not None else 0.0)
        return low or (n > 0 and log_scale / n > self.max_log_scale)

    def distrusted(self, clients: Sequence[int], now: Mapping[int, Vote] | None = None) -> list[int]:
        """Those of ``clients`` whose reputation fails, with this round's votes ``now`` counted
        for the scale test (none when that is all of them)."""
        out = [c for c in clients if self._bad(c, (now or {}).get(c))]
        return [] if len(out) == len(clients) else out

    def observe(self, votes: Mapping[int, Vote]) -> None:
        """Add one round's votes (in client order, so a replay sums the same floats)."""
        for c in sorted(votes):
            v, w, s = votes[c]
            self.votes[c] = self.votes.get(c, 0.0) + float(v)
            self.weights[c] = self.weights.get(c, 0.0) + float(w)
            self.log_scale[c] = self.log_scale.get(c, 0.0) + float(s)
            self.rounds[c] = self.rounds.get(c, 0) + 1

    def scores(self) -> dict[int, float]:
        """Every scored client's direction z-score."""
        return {c: self.score(c) for c in sorted(self.rounds)}


def votes_to_json(votes: Mapping[int, Vote]) -> dict[str, list[float]]:
    """Votes as the update log stores them (JSON object keys are strings)."""
    return {str(c): list(v) for c, v in sorted(votes.items())}


def votes_from_json(obj: Mapping[str, Sequence[float]]) -> dict[int, Vote]:
    """Inverse of :func:`votes_to_json`."""
    return {int(c): (float(v[0]), float(v[1]), float(v[2])) for c, v in obj.items()}
