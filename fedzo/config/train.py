"""The configuration of a centralized run (``fedzo train``): the shared sections plus steps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fedzo.config.migrate import upgrade
from fedzo.config.sections import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    Section,
    ZOConfig,
    precision_problems,
)
from fedzo.config.validation import validate


class TrainConfig(Section):
    """Every option of a centralized run; field descriptions double as ``--help`` text."""

    version: Literal[2] = Field(2, description="format version")
    name: str = Field("train", description="run name (shown in plots and reports)")
    seed: int = Field(0, ge=0, description="run seed (data order, directions, adapter initialisation)")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    eval_every: int = Field(100, ge=1, description="evaluate every N steps (and at step 0 and the end)")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the model and its trained parameters")
    data: DataConfig = Field(default_factory=DataConfig, description="the task and its batches")
    zo: ZOConfig = Field(default_factory=ZOConfig, description="zeroth-order probing")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="optimizer and schedule")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="device, threads and compiled forwards")

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.optimizer.name == "zo-sgd-mmt" and self.zo.blockwise:
            raise ValueError("optimizer.name: zo-sgd-mmt cannot be combined with zo.blockwise")
        problems = precision_problems(self.model, self.runtime)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def train_config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """Validate a centralized-run mapping (either format) read from ``source``."""
    return validate(TrainConfig, upgrade(data, "train"), source)
