"""Learning-rate schedules: pure functions of the step index."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from fedzo.errors import ConfigError


class ScheduleKind(str, enum.Enum):
    """Shape of the learning-rate curve."""

    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


@dataclass(frozen=True)
class Schedule:
    """``lr(t)`` for ``t`` in ``[0, total_steps)``: warmup, then constant/linear/cosine decay
    from ``lr`` to ``lr * final_fraction``."""

    lr: float
    kind: ScheduleKind = ScheduleKind.CONSTANT
    total_steps: int = 1
    warmup_steps: int = 0
    final_fraction: float = 0.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ScheduleKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in ScheduleKind)
            raise ConfigError(f"schedule: {self.kind!r} is not known; allowed: {allowed}") from None
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
