"""Sparse perturbation masks and block-wise selection (ZO-Bench style).

A mask zeroes direction elements that must not move. Masks are regenerated or held
compactly, never as a dense float tensor:

* :class:`RandomMask` keeps a fixed random ``density`` fraction of elements, drawn
  from the portable hash of ``(mask_seed, tensor, element)``: no memory at all.
* :class:`MagnitudeMask` keeps the ``density`` fraction of smallest-magnitude
  elements of each tensor *as it was when the mask was built* (the pretrained
  weights, as in Sparse-MeZO). It is held as a packed bitmask: 1 bit per parameter.
  A tensor with more zeros than that fraction (LoRA's B starts all zeros) keeps a
  draw of its zeros seeded by the run's seed, not all of them.

Block-wise perturbation moves one block of tensors per direction; the block is a
pure function of the direction's seed.

:func:`make_mask` builds the mask a configuration names. In a federation every party
(server, each client, ``evaluate --run``) builds it from the *initial* weights it
already holds and the run's seed, so a mask costs no bytes on the wire and replay
stays bitwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import torch

from fedzo.errors import ConfigError
from fedzo.zo.noise import portable_bits
from fedzo.zo.params import ParamSet
from fedzo.zo.seeds import derive_seed

__all__ = ["BlockSchedule", "MagnitudeMask", "Mask", "RandomMask", "default_blocks", "make_mask"]

_BLOCK_TAG = 0xB10C
_MASK_TAG = 0x3A5C


class Mask(Protocol):
    """Zeroes, in place, the direction elements that are not perturbed."""

    def apply(self, tensor_index: int, start: int, z: torch.Tensor) -> None:
        """Zero the masked-out elements of ``z``, the chunk at ``start`` of tensor ``tensor_index``."""
        ...

    def density(self) -> float:
        """Fraction of the elements that are kept."""
        ...


def _check_density(density: float) -> float:
    if not (0.0 < float(density) <= 1.0):
        raise ConfigError(f"mask density: {density!r} is out of range; allowed: 0 < density <= 1")
    return float(density)


class RandomMask:
    """A fixed random mask regenerated from ``mask_seed`` (no memory)."""

    def __init__(self, density: float, mask_seed: int) -> None:
        self._density = _check_density(density)
        self.mask_seed = int(mask_seed)
        self._threshold = int(self._density * (1 << 32))

    def apply(self, tensor_index: int, start: int, z: torch.Tensor) -> None:
        """Zero the elements of ``z`` that the seeded draw leaves out."""
        key = derive_seed(self.mask_seed, tensor_index)
        keep = portable_bits(key, start, z.numel(), z.device) < self._threshold
        z.mul_(keep.view_as(z))

    def density(self) -> float:
        """Fraction of the elements that are kept."""
        return self._density


def _smallest(flat: torch.Tensor, k: int, tie_seed: int) -> torch.Tensor:
    """A uint8 mask of the ``k`` smallest elements of ``flat`` (non-negative). Elements tied
    at the threshold are all kept (on weights rounded from bfloat16 a pair may tie: one
    element over ``k``), except at a threshold of zero: a tensor with more than ``k``
    zeros (LoRA's B starts all zeros) keeps ``k`` of them, drawn with ``tie_seed``."""
    if k >= flat.numel():
        return torch.ones_like(flat, dtype=torch.uint8)
    thr = flat.float().kthvalue(k).values
    if thr > 0:
        return (flat <= thr).to(torch.uint8)
    zeros = (flat == 0).nonzero().reshape(-1)
    gen = torch.Generator().manual_seed(tie_seed)
    keep = torch.zeros_like(flat, dtype=torch.uint8)
    keep[zeros[torch.randperm(zeros.numel(), generator=gen)[:k].to(zeros.device)]] = 1
    return keep


class MagnitudeMask:
    """Keep the smallest-magnitude ``density`` fraction of each tensor (packed bits); of a
    tensor mostly zeros, a draw from ``seed`` of that fraction (see :func:`_smallest`)."""

    def __init__(self, params: ParamSet, density: float, seed: int = 0) -> None:
        self._density = _check_density(density)
        self._bits: list[torch.Tensor] = []
        for i, t in enumerate(params.tensors):
            flat = t.detach().reshape(-1).abs()
            k = max(1, round(self._density * flat.numel()))
            keep = _smallest(flat, k, derive_seed(seed, _MASK_TAG, i))
            pad = (-keep.numel()) % 8
            if pad:
                keep = torch.cat([keep, keep.new_zeros(pad)])
            weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=t.device)
            self._bits.append((keep.view(-1, 8) * weights).sum(dim=1).to(torch.uint8))

    def apply(self, tensor_index: int, start: int, z: torch.Tensor) -> None:
        """Zero the elements of ``z`` whose packed bit is 0 (``start`` a multiple of 8)."""
        if start % 8:
            raise ValueError("MagnitudeMask needs chunk offsets that are multiples of 8")
        n = z.numel()
        packed = self._bits[tensor_index][start // 8 : (start + n + 7) // 8]
        shifts = torch.arange(8, dtype=torch.uint8, device=z.device)
        keep = ((packed.unsqueeze(1) >> shifts) & 1).reshape(-1)[:n]
        z.mul_(keep.view_as(z).to(z.dtype))

    def density(self) -> float:
        """Fraction of the elements that are kept."""
        return self._density

    @property
    def nbytes(self) -> int:
        """Memory held by the packed mask."""
        return sum(b.numel() for b in self._bits)


def make_mask(kind: str, density: float, seed: int, params: ParamSet) -> Mask | None:
    """The mask ``kind`` (none | random | magnitude) of a run with ``seed``; a magnitude
    mask is taken from ``params`` as they are now (build it from the initial weights)."""
    if kind == "random":
        return RandomMask(density, derive_seed(seed, _MASK_TAG))
    if kind == "magnitude":
        return MagnitudeMask(params, density, seed)
    if kind != "none":
        raise ConfigError(f"zo.mask: {kind!r} is not allowed; allowed: none, random, magnitude")
    return None


def default_blocks(params: ParamSet) -> list[list[int]]:
    """Group tensors into blocks by their repeated-layer index.

    A tensor whose qualified name contains a numeric path component (``...layers.3.``
    in any naming scheme) belongs to the block of the path up to that component; other
    tensors form one block per parent module. Blocks come out in canonical order.
    """
    groups: dict[str, list[int]] = {}
    for i, name, _ in params:
        parts = name.split(".")
        key = ".".join(parts[:-1])
        for j, part in enumerate(parts[:-1]):
            if re.fullmatch(r"\d+", part):
                key = ".".join(parts[: j + 1])
                break
        groups.setdefault(key, []).append(i)
    return [groups[k] for k in sorted(groups, key=lambda k: min(groups[k]))]


class BlockSchedule:
    """Chooses the single block a direction perturbs, from the direction's seed."""

    def __init__(self, blocks: Sequence[Sequence[int]]) -> None:
        if not blocks or any(len(b) == 0 for b in blocks):
            raise ConfigError("block-wise perturbation needs at least one non-empty block")
        self.blocks = [list(b) for b in blocks]

    def tensors_for(self, seed: int) -> list[int]:
        """Indices of the tensors perturbed by the direction with this seed."""
        return self.blocks[derive_seed(seed, _BLOCK_TAG) % len(self.blocks)]
