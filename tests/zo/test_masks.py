"""Magnitude masks: the smallest magnitudes, and of a tensor of zeros a seeded draw of its density."""

from __future__ import annotations

import torch

from fedzo.zo.masks import MagnitudeMask
from fedzo.zo.params import ParamSet


def _kept(mask: MagnitudeMask, tensor_index: int, n: int) -> torch.Tensor:
    z = torch.ones(n)
    mask.apply(tensor_index, 0, z)
    return z


def test_distinct_magnitudes_keep_the_smallest() -> None:
    w = torch.tensor([0.5, -0.1, 0.3, -0.9, 0.2, 0.05, -0.7, 0.6, 0.4, -0.8])
    mask = MagnitudeMask(ParamSet(("w",), (w,)), 0.3)
    kept = _kept(mask, 0, w.numel())
    assert kept.tolist() == [0, 1, 0, 0, 1, 1, 0, 0, 0, 0]


def test_a_zero_tensor_keeps_its_density_not_every_element() -> None:
    # LoRA's B starts at zero: every magnitude ties; the mask still keeps 10 %
    b = torch.zeros(40, 16)
    ps = ParamSet(("a", "b"), (torch.randn(16, 40, generator=torch.Generator().manual_seed(1)), b))
    one = MagnitudeMask(ps, 0.1, seed=3)
    kept = _kept(one, 1, b.numel())
    assert int(kept.sum()) == 64
    assert torch.equal(kept, _kept(MagnitudeMask(ps, 0.1, seed=3), 1, b.numel()))  # every party derives the same
    assert not torch.equal(kept, _kept(MagnitudeMask(ps, 0.1, seed=4), 1, b.numel()))  # the seed draws the ties
    assert int(_kept(one, 0, 640).sum()) == 64


def test_nonzero_ties_at_the_threshold_are_all_kept() -> None:
    # as fedzo always did (the committed sparse runs rebuild bitwise): bfloat16-rounded weights tie in pairs
    w = torch.tensor([0.1, 0.2, 0.2, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    kept = _kept(MagnitudeMask(ParamSet(("w",), (w,)), 0.2, seed=0), 0, w.numel())
    assert kept.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
