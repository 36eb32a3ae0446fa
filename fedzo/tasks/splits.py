"""Deterministic stratified train/dev/test splits."""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["default_sizes", "stratified_split"]


def default_sizes(n: int) -> tuple[int, int]:
    """(test, dev) sizes used by the shipped corpora: min(1000, n/5) and min(500, n/10)."""
    return min(1000, n // 5), min(500, n // 10)


def _quotas(counts: dict[int, int], total: int, n: int) -> dict[int, int]:
    """Per-class share of ``n`` items, proportional to ``counts`` (largest remainder)."""
    exact = {c: n * k / total for c, k in counts.items()}
    quota = {c: int(v) for c, v in exact.items()}
    order = sorted(counts, key=lambda c: (-(exact[c] - quota[c]), c))
    for c in order[: n - sum(quota.values())]:
        quota[c] += 1
    return quota


def stratified_split(
    labels: Sequence[int], n_test: int, n_dev: int, *, seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Indices (train, dev, test), each class split in proportion; same seed, same split."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    counts = {c: len(v) for c, v in by_class.items()}
    total = len(labels)
    q_test = _quotas(counts, total, n_test)
    q_dev = _quotas(counts, total, n_dev)
    train: list[int] = []
    dev: list[int] = []
    test: list[int] = []
    for c in sorted(by_class):
        idx = by_class[c][:]
        rng.shuffle(idx)
        test += idx[: q_test[c]]
        dev += idx[q_test[c] : q_test[c] + q_dev[c]]
        train += idx[q_test[c] + q_dev[c] :]
    for part in (train, dev, test):
        rng.shuffle(part)
    return train, dev, test
