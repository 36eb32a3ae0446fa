"""PerturberRecipe: the one way a run's perturbers are built, and what each option gives."""

from __future__ import annotations

import torch

from fedzo.zo import NoiseSpec, ParamSet, Perturber, PerturberRecipe
from fedzo.zo.masks import MagnitudeMask, default_blocks, make_mask
from fedzo.zo.perturb import COMPILED_REPLAY_MIN_ELEMENTS


def _params() -> ParamSet:
    g = torch.Generator().manual_seed(0)
    return ParamSet(("layers.0.w", "layers.1.w"), (torch.randn(64, generator=g), torch.randn(32, generator=g)))


def test_a_recipe_builds_the_perturber_its_fields_describe() -> None:
    spec = NoiseSpec("portable", "rademacher", 1024)
    params = _params()
    recipe = PerturberRecipe(spec, mask="magnitude", mask_density=0.25, mask_seed=5, blockwise=True)
    pert = recipe.build(params)
    assert pert.spec == spec and not pert.compiled and pert.shared is None
    assert isinstance(pert.mask, MagnitudeMask) and pert.blocks is not None
    assert pert.blocks.tensors_for(3) is not None and len(default_blocks(params)) == 2
    by_hand = Perturber(params, spec, mask=make_mask("magnitude", 0.25, 5, params), blocks=pert.blocks)
    assert all(torch.equal(a, b) for a, b in zip(pert.direction(9), by_hand.direction(9), strict=True))


def test_like_shares_the_mask_and_blocks_and_replay_compiles_only_large_sets() -> None:
    recipe = PerturberRecipe(NoiseSpec(), mask="random", mask_density=0.5, mask_seed=1)
    work = recipe.build(_params())
    clean = recipe.build(_params(), like=work, replay=True)
    assert clean.mask is work.mask and clean.blocks is work.blocks
    assert not clean.compiled  # 96 elements: below COMPILED_REPLAY_MIN_ELEMENTS
    big = ParamSet.from_tensors({"w": torch.zeros(COMPILED_REPLAY_MIN_ELEMENTS)})
    assert recipe.build(big, replay=True).compiled and not recipe.build(big).compiled
    assert PerturberRecipe(NoiseSpec(), compile=True).build(_params()).compiled
    assert recipe.mask_for(_params()) is not None and PerturberRecipe(NoiseSpec()).mask_for(_params()) is None
