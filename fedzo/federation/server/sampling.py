"""Who takes part in a round: a pure function of the run seed, the round and the attempt."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from fedzo.records import ClientRecord
from fedzo.zo.seeds import derive_seed

SAMPLE_TAG = 0x5A3F


def sample_clients(run_seed: int, round_: int, num_clients: int, count: int, attempt: int = 0,
                   eligible: Sequence[int] | None = None) -> list[int]:
    """The participants of a round (sorted), a pure function of the seeds.

    ``eligible`` restricts the draw (clients excluded for memory); with every client
    eligible the draw is the same as without it.
    """
    rng = random.Random(derive_seed(run_seed, SAMPLE_TAG, round_, attempt))
    population: Sequence[int] = range(num_clients) if eligible is None else list(eligible)
    return sorted(rng.sample(population, min(count, len(population))))


def skip_reason(records: Sequence[ClientRecord], kept: int, min_clients: int, policy: str) -> str:
    """Why a round applied no update: ``0 of 2 sampled clients trained (2 offline); min_clients is 1
    (policy skip)``."""
    last = max((r.attempt for r in records), default=0)
    tried = [r for r in records if r.attempt == last]
    counts = Counter(r.status for r in tried if r.status != "ok")
    why = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    retried = f", after {last} retry" if last else ""
    return (f"{kept} of {len(tried)} sampled clients trained{f' ({why})' if why else ''}; min_clients is "
            f"{min_clients} (policy {policy}{retried})")
