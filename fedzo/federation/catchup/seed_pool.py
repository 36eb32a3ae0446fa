"""``seed_pool`` (FedKSeed): step seeds come from a fixed pool of ``P`` seeds, and the
global model is *defined* as ``initial + sum_p A_p z(pool_p)`` in pool order, where
``A_p`` is the accumulated coefficient of pool seed ``p``.

The catch-up is the ``A`` vector (at most ``P`` scalars whatever the lag); client and
server rebuild from the initial weights with the same operations, so it is exact too.
It needs a constant lr and one direction per step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from fedzo.errors import ConfigError
from fedzo.federation.catchup.base import CatchUp, CatchUpCost, Entry, History, Weights
from fedzo.zo.log import LogEntry, UpdateLog
from fedzo.zo.seeds import derive_seed

_POOL_SEED_TAG = 0x9001
_POOL_DRAW_TAG = 0x9002


class SeedPool:
    """FedKSeed's pool: ``size`` fixed seeds and their accumulated coefficients."""

    def __init__(self, run_seed: int, size: int) -> None:
        self.seeds = tuple(derive_seed(run_seed, _POOL_SEED_TAG, p) for p in range(size))
        self.index = {s: p for p, s in enumerate(self.seeds)}
        self.totals = np.zeros(size, dtype=np.float64)
        self.run_seed = run_seed

    def draw(self, round_: int, k: int) -> tuple[int, ...]:
        """The ``k`` distinct pool seeds used as step seeds in ``round_``."""
        rng = random.Random(derive_seed(self.run_seed, _POOL_DRAW_TAG, round_))
        return tuple(self.seeds[p] for p in rng.sample(range(len(self.seeds)), k))

    def accumulate(self, entries: Sequence[Entry]) -> None:
        """Add a round's coefficients (in order) to the pool totals."""
        for seed, coef in entries:
            p = self.index.get(seed)
            if p is None:
                raise ConfigError(f"seed {seed} is not in the seed pool; seed_pool rounds must draw "
                                  "their step seeds from the pool")
            self.totals[p] += coef

    def catch_up(self, to_round: int) -> CatchUp:
        """The pool totals as a catch-up (non-zero entries, pool order)."""
        nz = [p for p in range(len(self.seeds)) if self.totals[p] != 0.0]
        return CatchUp("seed_pool", 0, to_round, tuple(self.seeds[p] for p in nz),
                       tuple(float(self.totals[p]) for p in nz))


class SeedPoolPolicy:
    """Send the pool totals; everyone rebuilds from the initial weights."""

    name = "seed_pool"
    incremental = False

    def __init__(self, run_seed: int, size: int) -> None:
        self.pool = SeedPool(run_seed, size)

    def step_seeds(self, run_seed: int, round_: int, k: int) -> tuple[int, ...]:
        """K distinct seeds drawn from the pool."""
        return self.pool.draw(round_, k)

    def observe(self, round_: int, entries: Sequence[Entry]) -> None:
        """Accumulate the round into the pool totals."""
        self.pool.accumulate(entries)

    def global_entries(self, log: UpdateLog, upto: int) -> list[LogEntry]:
        """The pool totals of the log's rounds up to ``upto``, in pool order."""
        pool = SeedPool(self.pool.run_seed, len(self.pool.seeds))
        pool.accumulate([(e.seed, e.coefficient) for e in log.entries(upto=upto)])
        return pool.catch_up(upto).entries()

    def plan(self, client: int, to_round: int, history: History, weights: Weights,
             cost: CatchUpCost) -> CatchUp:
        """The pool totals (nothing when the client is current)."""
        if history.last_sync.get(client, 0) == to_round:
            return CatchUp("none", to_round, to_round)
        return self.pool.catch_up(to_round)
