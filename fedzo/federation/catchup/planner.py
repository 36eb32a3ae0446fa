"""The server's catch-up planner: a policy, the bounded history and the device cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from fedzo.federation.catchup.base import CatchUp, CatchUpCost, CatchUpPolicy, Entry, History, Weights


@dataclass
class CatchUpPlanner:
    """What to send each returning client, from the policy and what the server remembers."""

    policy: CatchUpPolicy
    cost: CatchUpCost
    history: History = field(default_factory=History)

    def record_round(self, round_: int, entries: Sequence[Entry]) -> None:
        """Remember a round the server applied (history and the policy's own state)."""
        self.history.record(round_, entries)
        self.policy.observe(round_, entries)

    def mark_synced(self, client: int, round_: int) -> None:
        """``client`` now holds ``global(round_)``."""
        self.history.mark_synced(client, round_)

    def plan(self, client: int, to_round: int, weights: Weights) -> CatchUp:
        """The catch-up that brings ``client`` to ``global(to_round)``."""
        return self.policy.plan(client, to_round, self.history, weights, self.cost)

    @property
    def history_entries(self) -> int:
        """Entries held in memory (bounded)."""
        return self.history.entries_held
