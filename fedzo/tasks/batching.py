"""Batches of token ids padded to the longest sequence in the batch."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from fedzo.tasks.types import Example

__all__ = ["Batch", "make_batches", "pad_batch"]


@dataclass
class Batch:
    """Padded inputs: ``input_ids`` and ``attention_mask`` (B, T), ``labels`` (B,)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def pad_batch(ids: Sequence[Sequence[int]], labels: Sequence[int], *, pad_id: int, side: str) -> Batch:
    """Pad ``ids`` to the longest with ``pad_id`` on ``side`` (``left`` or ``right``)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        input_ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return Batch(input_ids, mask, torch.tensor(list(labels), dtype=torch.long))


def make_batches(
    examples: Sequence[Example],
    batch_size: int,
    encode: Callable[[str], list[int]],
    *,
    pad_id: int,
    side: str,
    seed: int = 0,
    shuffle: bool = False,
) -> Iterator[Batch]:
    """Batches over ``examples`` (shuffled by ``seed`` if asked; the last may be smaller)."""
    order = list(range(len(examples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start : start + batch_size]]
        yield pad_batch([encode(e.text) for e in chunk], [e.label for e in chunk], pad_id=pad_id, side=side)
