"""Zeroth-order gradient estimators: how a step probes the loss along seeded directions.

A step with step seed ``s`` uses ``q`` directions with seeds ``direction_seeds(s, q)``
(``s`` itself when ``q == 1``). Directions are processed one after another, each
followed by its own update with learning rate ``lr / q``: peak memory stays at one
direction (never a sum of ``q``), and to first order in ``lr`` this equals averaging
the ``q`` estimates.

* ``central`` (two-point SPSA): ``g = (f(x + eps z) - f(x - eps z)) / (2 eps)``;
  2 forward passes and 3 regenerations per direction.
* ``one-sided``: ``g = (f(x + eps z) - f(x)) / eps``; 2 forward passes (one at ``x``).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from fedzo.errors import ConfigError
from fedzo.zo.seeds import derive_seed

LossFn = Callable[[], float]

_DIRECTION_TAG = 0xD1EC


class EstimatorKind(str, enum.Enum):
    """Finite-difference scheme."""

    CENTRAL = "central"
    ONE_SIDED = "one-sided"


@dataclass(frozen=True)
class EstimatorConfig:
    """Estimator settings shared by trainer, clients and server."""

    kind: EstimatorKind = EstimatorKind.CENTRAL
    eps: float = 1e-3
    q: int = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", EstimatorKind(self.kind))
        except ValueError:
            allowed = ", ".join(k.value for k in EstimatorKind)
            raise ConfigError(f"estimator: {self.kind!r} is not known; allowed: {allowed}") from None
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps: {self.eps!r} is not allowed; eps must be a finite number > 0")
        if not isinstance(self.q, int) or isinstance(self.q, bool) or self.q < 1:
            raise ConfigError(f"q: {self.q!r} is not allowed; q must be an integer >= 1")


def direction_seeds(step_seed: int, q: int) -> list[int]:
    """The seeds of the ``q`` directions of a step."""
    if q == 1:
        return [step_seed]
    return [derive_seed(step_seed, _DIRECTION_TAG, j) for j in range(q)]


def finite(value: float, what: str) -> float:
    """``value`` as float, or a clear error when the loss blew up."""
    v = float(value)
    if not math.isfinite(v):
        raise FloatingPointError(f"{what} is not finite ({v}); lower lr or eps")
    return v
