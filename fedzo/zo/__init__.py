"""Pure-torch zeroth-order core: seeded directions, in-place perturbation, estimators,
optimisers and the replayable update log. Imports neither flwr nor transformers."""

from fedzo.zo.estimators import ESTIMATORS, EstimatorConfig, direction_lr, direction_seeds
from fedzo.zo.forward_grad import DirectionalLoss, module_along
from fedzo.zo.log import LogEntry, UpdateLog, check_signature, param_signature
from fedzo.zo.masks import BlockSchedule, MagnitudeMask, Mask, RandomMask, default_blocks
from fedzo.zo.noise import Distribution, DistributionName, GeneratorKind, GeneratorName, NoiseSpec
from fedzo.zo.optimizers import OPTIMIZERS, ZOOptimizer, is_zo, make_zo_optimizer, optimizer_names
from fedzo.zo.params import ParamSet, param_digest
from fedzo.zo.perturb import Perturber, PerturberRecipe
from fedzo.zo.replay import aggregate_entries, apply_entries
from fedzo.zo.schedules import Schedule, ScheduleKind, ScheduleName
from fedzo.zo.seeds import derive_seed, seed_stream
from fedzo.zo.step import StepResult, zo_step

__all__ = [
    "ESTIMATORS",
    "OPTIMIZERS",
    "BlockSchedule",
    "DirectionalLoss",
    "Distribution",
    "DistributionName",
    "EstimatorConfig",
    "GeneratorKind",
    "GeneratorName",
    "LogEntry",
    "MagnitudeMask",
    "Mask",
    "NoiseSpec",
    "ParamSet",
    "Perturber",
    "PerturberRecipe",
    "RandomMask",
    "Schedule",
    "ScheduleKind",
    "ScheduleName",
    "StepResult",
    "UpdateLog",
    "ZOOptimizer",
    "aggregate_entries",
    "apply_entries",
    "check_signature",
    "default_blocks",
    "derive_seed",
    "direction_lr",
    "direction_seeds",
    "is_zo",
    "make_zo_optimizer",
    "module_along",
    "optimizer_names",
    "param_digest",
    "param_signature",
    "seed_stream",
    "zo_step",
]
