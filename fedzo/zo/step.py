"""One ZO step: probe the loss along seeded directions and update in place.

Seeds go in as arguments and come back in the result with the projected gradients;
nothing is carried between calls except what the optimiser owns explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedzo.zo.estimators import EstimatorConfig, EstimatorKind, LossFn, direction_seeds, finite
from fedzo.zo.optimizers import ZOOptimizer
from fedzo.zo.perturb import Perturber


@dataclass(frozen=True)
class DirectionResult:
    """What one direction of a step measured and did."""

    seed: int
    grad: float  # projected gradient (scalar)
    loss: float  # loss at the centre estimate (mean of the two probes, or f(x))
    alphas: tuple[float, ...]  # every in-place move along z(seed), in order
    lr: float


@dataclass(frozen=True)
class StepResult:
    """The seeds and scalars of one step: all a server needs to replay it."""

    step_seed: int
    directions: tuple[DirectionResult, ...]

    @property
    def grads(self) -> tuple[float, ...]:
        """Projected gradients, one per direction."""
        return tuple(d.grad for d in self.directions)

    @property
    def loss(self) -> float:
        """Mean loss over the step's probes."""
        return sum(d.loss for d in self.directions) / len(self.directions)


def estimate_direction(
    perturber: Perturber, loss_fn: LossFn, seed: int, est: EstimatorConfig
) -> tuple[float, float, tuple[float, ...], float]:
    """Probe one direction. Returns (grad, centre loss, alphas applied, restore alpha).

    On return the parameters sit at the last probe point; applying ``restore`` brings
    them back (mathematically) to where they started.
    """
    eps = est.eps
    if est.kind is EstimatorKind.CENTRAL:
        perturber.apply(seed, (eps,))
        f_plus = finite(loss_fn(), "loss at x + eps z")
        perturber.apply(seed, (-2 * eps,))
        f_minus = finite(loss_fn(), "loss at x - eps z")
        grad = (f_plus - f_minus) / (2 * eps)
        return grad, 0.5 * (f_plus + f_minus), (eps, -2 * eps), eps
    f_zero = finite(loss_fn(), "loss at x")
    perturber.apply(seed, (eps,))
    f_plus = finite(loss_fn(), "loss at x + eps z")
    return (f_plus - f_zero) / eps, f_zero, (eps,), -eps


def zo_step(
    perturber: Perturber,
    loss_fn: LossFn,
    step_seed: int,
    est: EstimatorConfig,
    optimizer: ZOOptimizer,
    lr: float,
) -> StepResult:
    """One ZO step with ``est.q`` directions; parameters are updated in place.

    ``loss_fn`` must evaluate the same minibatch every time it is called within the
    step. Cost per direction: 2 forward passes (+ optimiser extras) and 3 regenerations.
    """
    results = []
    lr_dir = lr / est.q
    for seed in direction_seeds(step_seed, est.q):
        grad, centre, pre, restore = estimate_direction(perturber, loss_fn, seed, est)
        alphas = optimizer.step(perturber, seed, pre, restore, grad, lr_dir, loss_fn)
        results.append(DirectionResult(seed, grad, centre, alphas, lr_dir))
    return StepResult(step_seed, tuple(results))
