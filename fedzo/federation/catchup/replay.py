"""``replay`` (DeComFL): a returning client applies the log entries it missed, in order.

Exact: the server applied the same numbers in the same order. The global model moves
by each round's entries; a client further behind than the kept history gets the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedzo.federation.catchup.base import CatchUp, CatchUpCost, Entry, History, Weights, replay_or_full
from fedzo.zo.log import LogEntry, UpdateLog
from fedzo.zo.seeds import STEP_TAG, derive_seed


def derived_step_seeds(run_seed: int, round_: int, k: int) -> tuple[int, ...]:
    """The K step seeds of a round, derived from the run seed (every policy but seed_pool)."""
    return tuple(derive_seed(run_seed, STEP_TAG, round_, i) for i in range(k))


class ReplayPolicy:
    """Send the missed entries."""

    name = "replay"
    incremental = True

    def step_seeds(self, run_seed: int, round_: int, k: int) -> tuple[int, ...]:
        """Derived from the run seed."""
        return derived_step_seeds(run_seed, round_, k)

    def observe(self, round_: int, entries: Sequence[Entry]) -> None:
        """No state of its own."""

    def global_entries(self, log: UpdateLog, upto: int) -> list[LogEntry]:
        """The log itself, in order."""
        return log.entries(upto=upto)

    def plan(self, client: int, to_round: int, history: History, weights: Weights,
             cost: CatchUpCost) -> CatchUp:
        """The missed entries (the weights when history was compacted past them)."""
        if history.last_sync.get(client, 0) == to_round:
            return CatchUp("none", to_round, to_round)
        return replay_or_full(client, to_round, history, weights)
