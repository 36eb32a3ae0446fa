"""Pure-torch zeroth-order core: seeded directions, in-place perturbation, estimators,
optimisers and the replayable update log. Imports neither flwr nor transformers."""

from fedzo.zo.estimators import EstimatorConfig, EstimatorKind, direction_seeds
from fedzo.zo.log import LogEntry, UpdateLog, check_signature, param_signature, replay
from fedzo.zo.masks import BlockSchedule, MagnitudeMask, RandomMask, default_blocks
from fedzo.zo.noise import Distribution, GeneratorKind, NoiseSpec
from fedzo.zo.optimizers import ZO_OPTIMIZERS, ZOOptimizer, make_zo_optimizer
from fedzo.zo.params import ParamSet, param_digest
from fedzo.zo.perturb import Perturber
from fedzo.zo.schedules import Schedule, ScheduleKind
from fedzo.zo.seeds import derive_seed, seed_stream
from fedzo.zo.step import StepResult, zo_step

__all__ = [
    "BlockSchedule", "Distribution", "EstimatorConfig", "EstimatorKind", "GeneratorKind",
    "LogEntry", "MagnitudeMask", "NoiseSpec", "ParamSet", "Perturber", "RandomMask",
    "Schedule", "ScheduleKind", "StepResult", "UpdateLog", "ZOOptimizer", "ZO_OPTIMIZERS",
    "check_signature", "default_blocks", "derive_seed", "direction_seeds", "make_zo_optimizer",
    "param_digest", "param_signature", "replay", "seed_stream", "zo_step",
]
