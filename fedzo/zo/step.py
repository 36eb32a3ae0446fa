"""One ZO step: probe the loss along seeded directions and update in place.

Seeds go in as arguments and come back in the result with the projected gradients;
nothing is carried between calls except what the optimiser owns explicitly.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from fedzo.errors import ConfigError
from fedzo.zo.estimators import EstimatorConfig, LossFn, direction_lr, direction_seeds, finite
from fedzo.zo.log import LogEntry
from fedzo.zo.optimizers import ZOSGD, ZOOptimizer
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
    probes: tuple[tuple[int, tuple[float, ...]], ...] = ()  # (seed, moves) made before the directions' updates

    def log_entries(self, index: int) -> list[LogEntry]:
        """The step's moves as update-log entries, in the order they were made."""
        return ([LogEntry(index, seed, moves) for seed, moves in self.probes]
                + [LogEntry(index, d.seed, d.alphas, d.grad, d.lr) for d in self.directions])

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
    if est.estimator.normalized:
        return _normalized_step(perturber, loss_fn, step_seed, est, optimizer, lr)
    results = []
    lr_dir = direction_lr(lr, est.q)
    probe = est.estimator.probe
    for seed in direction_seeds(step_seed, est.q):
        p = probe(perturber, loss_fn, seed, est.eps)
        alphas = optimizer.step(perturber, seed, p.alphas, p.restore, p.grad, lr_dir, loss_fn)
        results.append(DirectionResult(seed, p.grad, p.centre_loss, alphas, lr_dir))
    return StepResult(step_seed, tuple(results))


def _normalized_step(perturber: Perturber, loss_fn: LossFn, step_seed: int, est: EstimatorConfig,
                     optimizer: ZOOptimizer, lr: float) -> StepResult:
    """FZOO-style: probe every direction (and step back), then move along each by its
    loss difference over the spread of the perturbed losses."""
    if not isinstance(optimizer, ZOSGD):
        raise ConfigError(f"estimator {est.kind!r} needs a stateless optimizer (zo-sgd, zo-sgd-sign); "
                          f"{optimizer.name!r} is not one")
    seeds = direction_seeds(step_seed, est.q)
    f_zero = finite(loss_fn(), "loss at x")
    losses, probes = [], []
    for seed in seeds:
        perturber.apply(seed, (est.eps,))
        losses.append(finite(loss_fn(), "loss at x + eps z"))
        perturber.apply(seed, (-est.eps,))
        probes.append((seed, (est.eps, -est.eps)))
    sigma = statistics.pstdev(losses)
    lr_dir = direction_lr(lr, est.q)
    results = []
    for seed, f in zip(seeds, losses, strict=True):
        scalar = (f - f_zero) / sigma if sigma > 0 else 0.0
        alphas = optimizer.step(perturber, seed, (), 0.0, scalar, lr_dir, loss_fn)
        results.append(DirectionResult(seed, scalar, f_zero, alphas, lr_dir))
    return StepResult(step_seed, tuple(results), tuple(probes))
