"""What every catch-up policy shares: the catch-up a client receives, the server's
bounded history, the cost a policy may weigh, and the policy protocol itself.

Before training in round ``r`` a client must hold ``global(r - 1)``. The server
remembers, per client, the round its model is synced to (0: the initial weights) and
keeps the log entries of recent rounds; a policy (one module each, registered in
:data:`fedzo.federation.catchup.CATCH_UP_POLICIES`) decides what a client behind is sent
and how anyone rebuilds the global model from the update log.

History is compacted: entries no client can still need (older than every client's last
sync, or than ``history_rounds``) are dropped; a client further behind gets ``full``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from fedzo.zo.log import LogEntry, UpdateLog

Entry = tuple[int, float]  # (direction seed, coefficient)
CatchUpKind = Literal["none", "replay", "seed_pool", "full"]
CATCH_UP_KINDS: tuple[str, ...] = ("none", "replay", "seed_pool", "full")
Weights = Callable[[], dict[str, np.ndarray]]


@dataclass(frozen=True)
class CatchUp:
    """How a client reaches the global model of round ``to_round`` (what travels down).

    ``replay``: apply ``theta += coef * z(seed)`` for each pair, in order, from the state
    of round ``from_round``. ``seed_pool``: reset to the initial weights, then apply the
    pairs. ``full``: copy ``weights`` (with the server optimizer's buffers, when it keeps
    any). ``none``: the client is already there. ``round_sizes``: the number of pairs of
    each round replayed, when the server optimizer moves the model round by round (empty:
    the pairs are applied as one sequence).
    """

    kind: CatchUpKind = "none"
    from_round: int = 0
    to_round: int = 0
    seeds: tuple[int, ...] = ()
    coefs: tuple[float, ...] = ()
    weights: dict[str, np.ndarray] | None = field(default=None, compare=False)
    round_sizes: tuple[int, ...] = ()

    def entries(self) -> list[LogEntry]:
        """The pairs as log entries, ready for :func:`fedzo.zo.log.apply_entries`."""
        return [LogEntry(self.to_round, s, (c,)) for s, c in zip(self.seeds, self.coefs, strict=True)]

    def rounds(self) -> list[list[LogEntry]]:
        """The pairs grouped by round (one group when ``round_sizes`` is empty)."""
        entries = self.entries()
        if not self.round_sizes:
            return [entries]
        out, at = [], 0
        for n in self.round_sizes:
            out.append(entries[at : at + n])
            at += n
        return out

    @property
    def replayed_entries(self) -> int:
        """Directions the client regenerates to apply this catch-up."""
        return len(self.seeds) if self.kind in ("replay", "seed_pool") else 0


class CatchUpCost(Protocol):
    """Device time of the two ways to catch a client up (the simulated clock answers)."""

    def replay_seconds(self, client: int, entries: int) -> float:
        """Download ``entries`` pairs and regenerate one direction for each."""

    def full_seconds(self, client: int) -> float:
        """Download the trainable weights."""


@dataclass
class History:
    """Server-side catch-up state: each client's last sync and a compacted entry history."""

    history_rounds: int | None = None
    last_sync: dict[int, int] = field(default_factory=dict)
    rounds: list[tuple[int, list[Entry]]] = field(default_factory=list)
    base_round: int = 0  # entries of rounds <= base_round have been compacted away
    current_round: int = 0  # the newest round recorded
    group_rounds: bool = False  # replay catch-ups say how many pairs each round has (stateful server optimizer)

    def record(self, round_: int, entries: Sequence[Entry]) -> None:
        """Remember the entries the server applied in ``round_``, then compact."""
        if round_ <= self.current_round:
            raise ValueError(f"round {round_} is not after round {self.current_round}")
        self.rounds.append((round_, list(entries)))
        self.current_round = round_
        self.compact()

    def mark_synced(self, client: int, round_: int) -> None:
        """``client`` now holds ``global(round_)``."""
        self.last_sync[client] = round_

    def compact(self) -> None:
        """Drop entries no client can need; bounded by ``history_rounds`` when set."""
        base = min(self.last_sync.values(), default=0)
        if self.history_rounds is not None:
            base = max(base, self.current_round - self.history_rounds)
        if base > self.base_round:
            self.rounds = [(r, e) for r, e in self.rounds if r > base]
            self.base_round = base

    @property
    def entries_held(self) -> int:
        """Entries held in memory (bounded)."""
        return sum(len(e) for _, e in self.rounds)

    def between(self, after: int, upto: int) -> list[Entry] | None:
        """Entries of rounds ``(after, upto]``, or None when some were compacted away."""
        if after < self.base_round:
            return None
        return [x for r, e in self.rounds if after < r <= upto for x in e]

    def replay(self, after: int, upto: int) -> CatchUp | None:
        """The ``replay`` catch-up from ``global(after)`` to ``global(upto)``, or None when
        some of its entries were compacted away."""
        entries = self.between(after, upto)
        if entries is None:
            return None
        sizes = tuple(len(e) for r, e in self.rounds if after < r <= upto) if self.group_rounds else ()
        if sizes and len(sizes) != upto - after:
            raise ValueError(f"history holds {len(sizes)} rounds in ({after}, {upto}]; every round is recorded")
        return CatchUp("replay", after, upto, tuple(s for s, _ in entries), tuple(c for _, c in entries),
                       round_sizes=sizes)


class CatchUpPolicy(Protocol):
    """One way of bringing returning clients to the global model.

    ``incremental`` policies move the global model by each round's entries in order
    (``global(r) = global(r - 1) + entries(r)``); the others rebuild it from the initial
    weights with :meth:`global_entries` after every round.
    """

    name: str
    incremental: bool

    def step_seeds(self, run_seed: int, round_: int, k: int) -> tuple[int, ...]:
        """The K step seeds of ``round_``."""

    def observe(self, round_: int, entries: Sequence[Entry]) -> None:
        """Note a round the server applied (policies with state of their own)."""

    def global_entries(self, log: UpdateLog, upto: int) -> list[LogEntry]:
        """Entries that, applied to the initial weights in order, give ``global(upto)``."""

    def plan(self, client: int, to_round: int, history: History, weights: Weights,
             cost: CatchUpCost) -> CatchUp:
        """The catch-up that brings ``client`` from its last sync to ``global(to_round)``."""


def replay_or_full(client: int, to_round: int, history: History, weights: Weights) -> CatchUp:
    """``replay`` of the entries the client missed, or ``full`` when some were compacted away."""
    frm = history.last_sync.get(client, 0)
    return history.replay(frm, to_round) or CatchUp("full", frm, to_round, weights=weights())
