"""``full``: a returning client receives the global trainable weights (an ArrayRecord)."""

from __future__ import annotations

from fedzo.federation.catchup.base import CatchUp, CatchUpCost, History, Weights
from fedzo.federation.catchup.replay import ReplayPolicy


class FullPolicy(ReplayPolicy):
    """Send the weights to every client that is behind."""

    name = "full"

    def plan(self, client: int, to_round: int, history: History, weights: Weights,
             cost: CatchUpCost) -> CatchUp:
        """The weights (nothing when the client is current)."""
        frm = history.last_sync.get(client, 0)
        if frm == to_round:
            return CatchUp("none", frm, to_round)
        return CatchUp("full", frm, to_round, weights=weights())
