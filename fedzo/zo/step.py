"""One ZO step: probe the loss along seeded directions and update in place.

Seeds go in as arguments and come back in the result with the projected gradients;
nothing is carried between calls except what the optimiser owns explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedzo.zo.estimators import EstimatorConfig, LossFn, direction_lr, direction_seeds
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
    lr_dir = direction_lr(lr, est.q)
    probe = est.estimator.probe
    for seed in direction_seeds(step_seed, est.q):
        p = probe(perturber, loss_fn, seed, est.eps)
        alphas = optimizer.step(perturber, seed, p.alphas, p.restore, p.grad, lr_dir, loss_fn)
        results.append(DirectionResult(seed, p.grad, p.centre_loss, alphas, lr_dir))
    return StepResult(step_seed, tuple(results))
