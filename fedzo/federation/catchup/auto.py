"""``auto``: per client, the cheaper of ``replay`` and ``full`` in modelled device time.

The cost comes from the run's simulated clock for that client's device: download of the
pairs plus one regeneration per replayed entry, against the download of the weights.
"""

from __future__ import annotations

from fedzo.federation.catchup.base import CatchUp, CatchUpCost, History, Weights
from fedzo.federation.catchup.replay import ReplayPolicy


class AutoPolicy(ReplayPolicy):
    """Replay or weights, whichever the client's device finishes first."""

    name = "auto"

    def plan(self, client: int, to_round: int, history: History, weights: Weights,
             cost: CatchUpCost) -> CatchUp:
        """Replay when it is not slower than downloading the weights."""
        frm = history.last_sync.get(client, 0)
        if frm == to_round:
            return CatchUp("none", frm, to_round)
        replay = history.replay(frm, to_round)
        if replay is not None and cost.replay_seconds(client, len(replay.seeds)) <= cost.full_seconds(client):
            return replay
        return CatchUp("full", frm, to_round, weights=weights())
