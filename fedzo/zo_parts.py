"""What a configuration's ``zo:`` section builds in the ZO core, derived in this one place.

A centralized run (:mod:`fedzo.train`) and every party of a federated run
(:mod:`fedzo.federation.parts`) take their noise spec, mask, blocks and compile flag
(:class:`~fedzo.zo.perturb.PerturberRecipe`) and their estimator settings
(:class:`~fedzo.zo.estimators.EstimatorConfig`) from here, so the section is read once
and the core's objects are never rebuilt from its fields elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedzo.zo.estimators import EstimatorConfig
from fedzo.zo.noise import NoiseSpec
from fedzo.zo.perturb import PerturberRecipe

if TYPE_CHECKING:
    from fedzo.config.sections import ZOConfig


def perturber_recipe(zo: ZOConfig, seed: int) -> PerturberRecipe:
    """The perturbers of a run with ``zo`` and run seed ``seed`` (the mask's seed)."""
    return PerturberRecipe(NoiseSpec(zo.generator, zo.distribution, zo.chunk_size), mask=zo.mask,
                           mask_density=zo.mask_density, mask_seed=seed, blockwise=zo.blockwise,
                           compile=zo.compile)


def estimator_config(zo: ZOConfig) -> EstimatorConfig:
    """The estimator, eps and q of a run with ``zo``."""
    return EstimatorConfig(zo.estimator, zo.eps, zo.q)
