"""Catch-up: bringing a returning client's model to the global model, and the server's
bounded memory of history.

The server remembers, per client, the round its model is synced to (0: the initial
weights). Before training in round ``r`` a client must hold ``global(r - 1)``:

* ``replay`` (DeComFL): the ``(seed, coefficient)`` entries of rounds
  ``(last_sync, r - 1]``, applied in order: ``theta += coef * z(seed)``. Exact: the server
  applied the same numbers in the same order.
* ``seed_pool`` (FedKSeed): step seeds are drawn from a fixed pool of ``P`` seeds and the
  global model is *defined* as ``initial + sum_p A_p z(pool_p)`` (pool order), where ``A_p``
  is the accumulated coefficient of pool seed ``p``. The catch-up is the ``A`` vector
  (at most ``P`` scalars whatever the lag); client and server rebuild from the initial
  weights with the same operations, so it is exact too. Needs a constant lr.
* ``full``: the weights themselves (an ArrayRecord).
* ``auto``: per client, whichever of replay and full has the lower modelled device time
  (download at the link's bandwidth + one regeneration pass per replayed entry).

History is compacted: entries no client can still need (older than every client's last
sync, or than ``history_rounds``) are dropped; the server's global model is the snapshot
they fold into, and a client further behind gets ``full``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedzo.errors import ConfigError
from fedzo.federation.messages import CatchUp
from fedzo.zo.seeds import derive_seed

_POOL_SEED_TAG = 0x9001
_POOL_DRAW_TAG = 0x9002

Entry = tuple[int, float]  # (direction seed, coefficient)


@dataclass(frozen=True)
class CostModel:
    """Device-side cost of a catch-up (used by ``auto``; switch to fedzo.devices' clock)."""

    downlink_bytes_per_second: float = 12.5e6  # 100 Mbit/s
    regen_seconds_per_element: float = 2e-9  # one portable-Gaussian pass, per parameter
    entry_bytes: int = 16  # seed (8) + coefficient (8)

    def replay_seconds(self, entries: int, numel: int) -> float:
        """Download ``entries`` pairs and apply each with one regeneration pass."""
        return entries * self.entry_bytes / self.downlink_bytes_per_second \
            + entries * numel * self.regen_seconds_per_element

    def full_seconds(self, weight_bytes: int) -> float:
        """Download the weights."""
        return weight_bytes / self.downlink_bytes_per_second


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


@dataclass
class CatchUpPlanner:
    """Server-side catch-up state: per-client last sync and a compacted entry history."""

    policy: str
    numel: int
    weight_bytes: int
    history_rounds: int | None = None
    pool: SeedPool | None = None
    cost: CostModel = field(default_factory=CostModel)
    last_sync: dict[int, int] = field(default_factory=dict)
    history: list[tuple[int, list[Entry]]] = field(default_factory=list)
    base_round: int = 0  # entries of rounds <= base_round have been compacted away
    current_round: int = 0  # the newest round recorded

    def __post_init__(self) -> None:
        allowed = ("replay", "seed_pool", "full", "auto")
        if self.policy not in allowed:
            raise ConfigError(f"catch_up: {self.policy!r} is not known; allowed: {', '.join(allowed)}")
        if self.policy == "seed_pool" and self.pool is None:
            raise ConfigError("catch_up: seed_pool needs a SeedPool")

    # -- recording ---------------------------------------------------------------------
    def record_round(self, round_: int, entries: Sequence[Entry]) -> None:
        """Remember the entries the server applied in ``round_``."""
        if round_ <= self.current_round:
            raise ValueError(f"round {round_} is not after round {self.current_round}")
        self.history.append((round_, list(entries)))
        self.current_round = round_
        if self.pool is not None:
            self.pool.accumulate(entries)
        self.compact()

    def mark_synced(self, client: int, round_: int) -> None:
        """``client`` now holds ``global(round_)``."""
        self.last_sync[client] = round_

    def compact(self, known_clients: Sequence[int] = ()) -> None:
        """Drop entries no client can need; bounded by ``history_rounds`` when set."""
        clients = set(self.last_sync) | set(known_clients)
        oldest_need = min((self.last_sync.get(c, 0) for c in clients), default=0)
        base = oldest_need
        if self.history_rounds is not None:
            base = max(base, self.current_round - self.history_rounds)
        if base > self.base_round:
            self.history = [(r, e) for r, e in self.history if r > base]
            self.base_round = base

    @property
    def history_entries(self) -> int:
        """Entries held in memory (bounded)."""
        return sum(len(e) for _, e in self.history)

    # -- planning ----------------------------------------------------------------------
    def entries_between(self, after: int, upto: int) -> list[Entry] | None:
        """Entries of rounds ``(after, upto]``, or None when some were compacted away."""
        if after < self.base_round:
            return None
        return [x for r, e in self.history if after < r <= upto for x in e]

    def plan(self, client: int, to_round: int,
             weights: Callable[[], dict[str, np.ndarray]]) -> CatchUp:
        """The catch-up that brings ``client`` from its last sync to ``global(to_round)``."""
        frm = self.last_sync.get(client, 0)
        if frm == to_round:
            return CatchUp("none", frm, to_round)
        if self.policy == "seed_pool":
            assert self.pool is not None
            return self.pool.catch_up(to_round)
        entries = self.entries_between(frm, to_round)
        policy = self.policy
        if policy == "auto" and entries is not None:
            replay_s = self.cost.replay_seconds(len(entries), self.numel)
            policy = "replay" if replay_s <= self.cost.full_seconds(self.weight_bytes) else "full"
        if policy == "replay" and entries is not None:
            return CatchUp("replay", frm, to_round, tuple(s for s, _ in entries),
                           tuple(c for _, c in entries))
        return CatchUp("full", frm, to_round, weights=weights())
