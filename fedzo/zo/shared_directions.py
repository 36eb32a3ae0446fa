"""Directions generated once and read by many perturbers on one host.

A device regenerates each direction from its seed whenever it needs it: that is what keeps
ZO's memory at inference level, and what the simulated clock prices. On the simulating
host, though, a round's participants all probe the same server-chosen seeds, so the
batched engine (:mod:`fedzo.federation.transports.batched`) lets their perturbers share one store of
direction chunks: the first perturber to need a chunk generates it, the others copy it.
Each client's arithmetic is unchanged (the same bits, then the same updates), so this is
host speed only: on the tiny model's prompt tuning, 100 clients x 4 steps x 3 moves read
4 generated directions instead of generating 1200.

Only the ``portable`` generator is shared: its chunks are pure functions of (seed, tensor,
offset), while the ``torch`` generator's stream must be consumed in order by each reader.
The store keeps chunks up to a byte cap and generates past it.
"""

from __future__ import annotations

import torch

from fedzo.zo.noise import DirectionStream, GeneratorKind

DEFAULT_MAX_BYTES = 64 << 20


class SharedDirections:
    """A store of direction chunks, keyed by seed, tensor, offset, length, dtype and device."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.generated = 0  # chunks generated (misses)
        self.copied = 0  # chunks read from the store (hits)
        self._chunks: dict[tuple[int, int, int, int, torch.dtype, torch.device], torch.Tensor] = {}

    def fill(self, stream: DirectionStream, tensor_index: int, start: int, out: torch.Tensor) -> torch.Tensor:
        """``stream.fill(tensor_index, start, out)``, read from the store when it has the chunk."""
        if stream.spec.generator is not GeneratorKind.PORTABLE:
            return stream.fill(tensor_index, start, out)
        key = (stream.seed, tensor_index, start, out.numel(), out.dtype, out.device)
        kept = self._chunks.get(key)
        if kept is not None:
            self.copied += 1
            return out.copy_(kept)
        self.generated += 1
        z = stream.fill(tensor_index, start, out)
        size = z.numel() * z.element_size()
        if self.bytes + size <= self.max_bytes:
            self._chunks[key] = z.clone()
            self.bytes += size
        return z
