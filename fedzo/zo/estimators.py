"""Zeroth-order gradient estimators: how a step probes the loss along seeded directions.

A step with step seed ``s`` uses ``q`` directions with seeds ``direction_seeds(s, q)``
(``s`` itself when ``q == 1``). Directions are processed one after another, each
followed by its own update with learning rate ``lr / q`` (:func:`direction_lr`): peak
memory stays at one direction (never a sum of ``q``), and to first order in ``lr`` this
equals averaging the ``q`` estimates. The server's replay uses the same split, so it is
defined once, here.

Estimators are registered by name (:data:`ESTIMATORS`):

* ``central`` (two-point SPSA): ``g = (f(x + eps z) - f(x - eps z)) / (2 eps)``;
  2 forward passes and 3 regenerations per direction.
* ``one-sided``: ``g = (f(x + eps z) - f(x)) / eps``; 2 forward passes per direction
  (``f(x)`` is re-measured for each direction, on the current parameters).
* ``fzoo`` (FZOO-style, Dang et al. 2025): one ``f(x)`` and one ``f(x + eps z_j)`` per
  direction, ``q + 1`` forward passes per step (q >= 2); every direction is probed (and
  restored) before any update, and the scalar of direction ``j`` is
  ``(f(x + eps z_j) - f(x)) / sigma``, ``sigma`` the standard deviation of the ``q``
  perturbed losses. The update ``-lr / q x scalar x z_j`` is then a normalized gradient
  step whose length does not depend on the loss's scale; the uplink stays one scalar per
  seed. Stateless optimizers only (zo-sgd, zo-sgd-sign): see :mod:`fedzo.zo.step`.
* ``forward-grad``: the exact ``<grad f(x), z>`` by forward-mode differentiation, one
  forward with tangents and 2 regenerations per direction (:mod:`fedzo.zo.forward_grad`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from fedzo.errors import ConfigError
from fedzo.registry import Registry
from fedzo.zo.perturb import Perturber
from fedzo.zo.seeds import derive_seed

LossFn = Callable[[], float]

_DIRECTION_TAG = 0xD1EC


@dataclass(frozen=True)
class Probe:
    """What probing one direction measured and did.

    On return the parameters sit at the last probe point; applying ``restore`` along
    the same direction brings them back (mathematically) to where they started.
    """

    grad: float  # projected gradient
    centre_loss: float  # loss at the centre estimate
    alphas: tuple[float, ...]  # the in-place moves applied so far, in order
    restore: float


ProbeFn = Callable[[Perturber, LossFn, int, float], Probe]


@dataclass(frozen=True)
class Estimator:
    """A finite-difference scheme: its probe and its cost in forward passes.

    ``normalized``: the step probes all its directions first and scales their scalars by
    the spread of the perturbed losses (:func:`fedzo.zo.step.zo_step`); ``probe`` is then
    unused, and the step costs one more forward (``f(x)``, shared by the directions).
    ``tangent_forwards_per_direction``: forwards that also carry a tangent (forward-mode
    differentiation), priced apart from plain forwards.
    """

    name: str
    probe: ProbeFn
    forwards_per_direction: int
    normalized: bool = False
    min_q: int = 1
    tangent_forwards_per_direction: int = 0
    regenerations_per_direction: int = 3


ESTIMATORS: Registry[Estimator] = Registry("estimator", "zo.estimator")


def _central(perturber: Perturber, loss_fn: LossFn, seed: int, eps: float) -> Probe:
    perturber.apply(seed, (eps,))
    f_plus = finite(loss_fn(), "loss at x + eps z")
    perturber.apply(seed, (-2 * eps,))
    f_minus = finite(loss_fn(), "loss at x - eps z")
    return Probe((f_plus - f_minus) / (2 * eps), 0.5 * (f_plus + f_minus), (eps, -2 * eps), eps)


def _one_sided(perturber: Perturber, loss_fn: LossFn, seed: int, eps: float) -> Probe:
    f_zero = finite(loss_fn(), "loss at x")
    perturber.apply(seed, (eps,))
    f_plus = finite(loss_fn(), "loss at x + eps z")
    return Probe((f_plus - f_zero) / eps, f_zero, (eps,), -eps)


ESTIMATORS.add("central", Estimator("central", _central, 2))
ESTIMATORS.add("one-sided", Estimator("one-sided", _one_sided, 2))
ESTIMATORS.add("fzoo", Estimator("fzoo", _one_sided, 1, normalized=True, min_q=2))


@dataclass(frozen=True)
class EstimatorConfig:
    """Estimator settings shared by trainer, clients and server."""

    kind: str = "central"
    eps: float = 1e-3
    q: int = 1

    def __post_init__(self) -> None:
        ESTIMATORS.get(self.kind)
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0):
            raise ConfigError(f"eps: {self.eps!r} is not allowed; eps must be a finite number > 0")
        if not isinstance(self.q, int) or isinstance(self.q, bool) or self.q < 1:
            raise ConfigError(f"q: {self.q!r} is not allowed; q must be an integer >= 1")
        if self.q < self.estimator.min_q:
            raise ConfigError(f"q: {self.q} is not allowed with estimator {self.kind!r}, which normalizes by the "
                              f"spread of the directions' losses; q must be >= {self.estimator.min_q}")

    @property
    def estimator(self) -> Estimator:
        """The registered estimator."""
        return ESTIMATORS.get(self.kind)

    @property
    def forwards_per_step(self) -> int:
        """Forward passes of one step (all ``q`` directions)."""
        return self.q * self.estimator.forwards_per_direction + int(self.estimator.normalized)

    @property
    def tangent_forwards_per_step(self) -> int:
        """Forward passes with tangents of one step (forward-grad: one per direction)."""
        return self.q * self.estimator.tangent_forwards_per_direction

    @property
    def regenerations_per_step(self) -> int:
        """Regenerations of one step: 3 per direction for finite differences (perturb, probe or
        unperturb, restore + update), 2 for forward-grad (the tangent, the update)."""
        return self.estimator.regenerations_per_direction * self.q


def direction_seeds(step_seed: int, q: int) -> list[int]:
    """The seeds of the ``q`` directions of a step."""
    if q == 1:
        return [step_seed]
    return [derive_seed(step_seed, _DIRECTION_TAG, j) for j in range(q)]


def direction_lr(lr: float, q: int) -> float:
    """The learning rate of each of a step's ``q`` directions."""
    return lr / q


def finite(value: float, what: str) -> float:
    """``value`` as float, or a clear error when the loss blew up."""
    v = float(value)
    if not math.isfinite(v):
        raise FloatingPointError(f"{what} is not finite ({v}); lower lr or eps")
    return v
