"""Classification metrics without extra dependencies."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["accuracy", "macro_f1"]


def accuracy(labels: Sequence[int], preds: Sequence[int]) -> float:
    """Share of predictions equal to the label (0.0 for no examples)."""
    return sum(int(y == p) for y, p in zip(labels, preds, strict=True)) / max(len(labels), 1)


def macro_f1(labels: Sequence[int], preds: Sequence[int], num_labels: int) -> float:
    """Unweighted mean of per-class F1 over ``num_labels`` classes (F1 0 where undefined)."""
    scores = []
    for c in range(num_labels):
        tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == c and p == c)
        fp = sum(1 for y, p in zip(labels, preds, strict=True) if y != c and p == c)
        fn = sum(1 for y, p in zip(labels, preds, strict=True) if y == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / max(num_labels, 1)
