"""Learning-rate schedules: pure functions of the step index."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal

from fedzo.errors import ConfigError


class ScheduleKind(str, enum.Enum):
    """Shape of the learning-rate curve."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


ScheduleName = Literal["constant", "linear", "cosine"]
"""The string form of a :class:`ScheduleKind` (as configuration files spell it)."""


@dataclass(frozen=True, init=False)
class Schedule:
    """``lr(t)`` for ``t`` in ``[0, total_steps)``: warmup, then constant/linear/cosine decay
    from ``lr`` to ``lr * final_fraction``. ``kind`` may be given as its string value."""

    lr: float
    kind: ScheduleKind
    total_steps: int
    warmup_steps: int
    final_fraction: float

    def __init__(
        self,
        lr: float,
        kind: ScheduleKind | ScheduleName = ScheduleKind.CONSTANT,
        total_steps: int = 1,
        warmup_steps: int = 0,
        final_fraction: float = 0.0,
    ) -> None:
        try:
            object.__setattr__(self, "kind", ScheduleKind(kind))
        except ValueError:
            allowed = ", ".join(k.value for k in ScheduleKind)
            raise ConfigError(f"schedule: {kind!r} is not known; allowed: {allowed}") from None
        object.__setattr__(self, "lr", lr)
        object.__setattr__(self, "total_steps", total_steps)
        object.__setattr__(self, "warmup_steps", warmup_steps)
        object.__setattr__(self, "final_fraction", final_fraction)
        self._validate()

    def _validate(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr: {self.lr!r} is not allowed; lr must be a finite number > 0")
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ConfigError("schedule: total_steps must be >= 1 and warmup_steps >= 0")
        if not 0.0 <= self.final_fraction <= 1.0:
            raise ConfigError(f"final_fraction: {self.final_fraction!r} must be in [0, 1]")

    @property
    def decays(self) -> bool:
        """Whether the learning rate changes over time."""
        return self.kind is not ScheduleKind.CONSTANT or self.warmup_steps > 0

    def __call__(self, t: int) -> float:
        """The learning rate at step (or round) ``t``: warm-up, then the schedule."""
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        if self.kind is ScheduleKind.CONSTANT:
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        frac = min(1.0, (t - self.warmup_steps) / span)
        lo = self.lr * self.final_fraction
        if self.kind is ScheduleKind.LINEAR:
            return self.lr + (lo - self.lr) * frac
        return lo + 0.5 * (self.lr - lo) * (1 + math.cos(math.pi * frac))
