"""Deterministic seed derivation: integers in, integers out, no global random state.

Every random quantity in fedzo is a pure function of an explicit seed. Derived seeds
(one per tensor, per direction of a step, per round) come from a SplitMix64 chain over
the parent seed and a tuple of small integers, so server and clients agree without
talking. Seeds stay in [0, 2**63) so they round-trip through Flower's int records.
"""

from __future__ import annotations

MASK64 = (1 << 64) - 1
SEED_LIMIT = 1 << 63

# Tags of the seeds that centralized and federated runs share, defined once:
STEP_TAG = 0x57E9  # the step seed of (run seed, step) or (run seed, round, k)
BATCH_TAG = 0xBA7C  # the minibatch of (run seed, step) or (run seed, round, client, k)


def splitmix64(x: int) -> int:
    """One SplitMix64 step on a 64-bit word (the mixer of every derived seed)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


PATH_OFFSET = 0x632BE59BD9B4E019  # added to each path integer before it is mixed


def derive_seed(seed: int, *path: int) -> int:
    """A seed in [0, 2**63) derived from ``seed`` and the integers in ``path``.

    ``derive_seed(s)`` differs from ``s``; ``derive_seed(s, 1, 2)`` is unrelated to
    ``derive_seed(s, 2, 1)``.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    x = splitmix64(seed & MASK64)
    for p in path:
        x = splitmix64(x ^ splitmix64((p & MASK64) + PATH_OFFSET))
    return x & (SEED_LIMIT - 1)


def seed_stream(seed: int, count: int, *path: int) -> list[int]:
    """``count`` derived seeds ``derive_seed(seed, *path, i)`` for i in range(count)."""
    return [derive_seed(seed, *path, i) for i in range(count)]
