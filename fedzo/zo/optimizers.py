"""ZO optimisers (ZO-Bench set) acting through a :class:`Perturber`.

Each optimiser performs the *last* pass of a direction: restoring the perturbation and
applying its update in one regeneration, and returns the alphas that describe the
whole direction for the update log. Stateless optimisers (ZO-SGD, ZO-SGD-Sign,
ZO-SGD-Cons) move along ``z`` only, so their updates are ``coefficient * z(seed)``
and fit the federated seeds-and-scalars protocol. Stateful ones (ZO-SGD-MMT, ZO-Adam)
keep dense buffers (memory: 1 or 2 copies of the trainable set); their replay re-runs
the same buffer arithmetic, which stays exact but needs the whole history in order.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from fedzo.errors import ConfigError
from fedzo.registry import Registry
from fedzo.zo.estimators import LossFn, finite
from fedzo.zo.perturb import Perturber


class ZOOptimizer(ABC):
    """Turns a projected gradient into an in-place update along the direction."""

    name: str = ""
    stateful: bool = False

    def bind(self, perturber: Perturber) -> None:  # noqa: B027 - a no-op by default, overridden by stateful ones
        """Allocate state for ``perturber``'s parameters (no-op when stateless)."""

    @abstractmethod
    def step(
        self,
        perturber: Perturber,
        seed: int,
        pre: Sequence[float],
        restore: float,
        grad: float,
        lr: float,
        loss_fn: LossFn,
    ) -> tuple[float, ...]:
        """Run the final pass(es) of one direction; return all of its alphas in order.

        ``pre`` are the alphas already applied (the perturbation); ``restore`` undoes
        them mathematically.
        """

    def replay(self, perturber: Perturber, seed: int, alphas: Sequence[float],
               grad: float | None, lr: float | None) -> None:
        """Re-apply one logged direction exactly as :meth:`step` applied it."""
        perturber.apply(seed, tuple(alphas))

    def hyperparameters(self) -> dict[str, Any]:
        """Settings needed to rebuild this optimiser (goes into the log header)."""
        return {}


class ZOSGD(ZOOptimizer):
    """MeZO's ZO-SGD: ``x -= lr * g * z``."""

    name = "zo-sgd"

    def coefficient(self, grad: float, lr: float) -> float:
        """The update coefficient along ``z``."""
        return -lr * grad

    def step(self, perturber: Perturber, seed: int, pre: Sequence[float], restore: float,
             grad: float, lr: float, loss_fn: LossFn) -> tuple[float, ...]:
        """Plain ZO-SGD: move along ``seed`` by ``-lr x grad`` (see :meth:`ZOOptimizer.step`)."""
        last = restore + self.coefficient(grad, lr)
        perturber.apply(seed, (last,))
        return (*pre, last)


class ZOSGDSign(ZOSGD):
    """ZO-SGD-Sign: ``x -= lr * sign(g) * z`` (robust to the scale of ``g``)."""

    name = "zo-sgd-sign"

    def coefficient(self, grad: float, lr: float) -> float:
        """``-lr x sign(grad)``: the step's size does not depend on the scalar's magnitude."""
        return -lr * (0.0 if grad == 0 else math.copysign(1.0, grad))


class ZOSGDCons(ZOOptimizer):
    """ZO-SGD-Cons (conservative): keep ``x``, ``x - lr g z`` or ``x + lr g z``, whichever
    has the lowest loss on the step's batch (2-3 extra forward passes)."""

    name = "zo-sgd-cons"

    def step(self, perturber: Perturber, seed: int, pre: Sequence[float], restore: float,
             grad: float, lr: float, loss_fn: LossFn) -> tuple[float, ...]:
        """Keep the move only if it lowers the loss (see :meth:`ZOOptimizer.step`)."""
        alphas = list(pre)
        perturber.apply(seed, (restore,))
        alphas.append(restore)
        f0 = finite(loss_fn(), "loss")
        c = -lr * grad
        perturber.apply(seed, (c,))
        alphas.append(c)
        f1 = finite(loss_fn(), "loss")
        perturber.apply(seed, (-2 * c,))
        alphas.append(-2 * c)
        f2 = finite(loss_fn(), "loss")
        best = min((f0, 0.0), (f1, c), (f2, -c), key=lambda t: t[0])[1]
        last = best - (-c)  # move from x - c z to x + best z
        perturber.apply(seed, (last,))
        alphas.append(last)
        return tuple(alphas)


class ZOSGDMomentum(ZOOptimizer):
    """ZO-SGD-MMT: ``m = beta m + g z; x -= lr m`` (dense momentum buffer)."""

    name = "zo-sgd-mmt"
    stateful = True

    def __init__(self, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum: {momentum!r} is out of range; allowed: 0 <= momentum < 1")
        self.momentum = momentum
        self.buffers: list[torch.Tensor] = []

    def bind(self, perturber: Perturber) -> None:
        """Keep a momentum buffer shaped like ``perturber``'s parameters."""
        self.buffers = [torch.zeros_like(t).view(-1) for t in perturber.params.tensors]

    def _hook(self, grad: float, lr: float) -> Any:
        def hook(i: int, start: int, piece: torch.Tensor, z: torch.Tensor) -> None:
            m = self.buffers[i][start : start + piece.numel()]
            m.mul_(self.momentum).add_(z, alpha=grad)
            piece.add_(m, alpha=-lr)
        return hook

    def step(self, perturber: Perturber, seed: int, pre: Sequence[float], restore: float,
             grad: float, lr: float, loss_fn: LossFn) -> tuple[float, ...]:
        """Update the momentum buffer along ``seed`` and move by it (see :meth:`ZOOptimizer.step`)."""
        if not self.buffers:
            self.bind(perturber)
        if perturber.blocks is not None:
            raise ConfigError("zo-sgd-mmt with block-wise perturbation is not supported")
        perturber.apply(seed, (restore,), final=self._hook(grad, lr))
        return (*pre, restore)

    def replay(self, perturber: Perturber, seed: int, alphas: Sequence[float],
               grad: float | None, lr: float | None) -> None:
        """Replay a logged step: the buffer and the parameters move as they did."""
        if not self.buffers:
            self.bind(perturber)
        perturber.apply(seed, tuple(alphas), final=self._hook(float(grad or 0.0), float(lr or 0.0)))

    def hyperparameters(self) -> dict[str, Any]:
        """The momentum, which with the name rebuilds this optimizer."""
        return {"momentum": self.momentum}


class ZOAdam(ZOOptimizer):
    """ZO-Adam: Adam moments of the estimated gradient ``g z`` (two dense buffers)."""

    name = "zo-adam"
    stateful = True

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, adam_eps: float = 1e-8) -> None:
        for key, v in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= v < 1.0:
                raise ConfigError(f"{key}: {v!r} is out of range; allowed: 0 <= {key} < 1")
        self.beta1, self.beta2, self.adam_eps = beta1, beta2, adam_eps
        self.m: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.t = 0

    def bind(self, perturber: Perturber) -> None:
        """Keep Adam's first and second moments shaped like ``perturber``'s parameters."""
        self.m = [torch.zeros_like(t).view(-1) for t in perturber.params.tensors]
        self.v = [torch.zeros_like(t).view(-1) for t in perturber.params.tensors]
        self.t = 0

    def _hook(self, grad: float, lr: float) -> Any:
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        step_size = lr / (1 - b1**self.t)
        v_corr = math.sqrt(1 - b2**self.t)

        def hook(i: int, start: int, piece: torch.Tensor, z: torch.Tensor) -> None:
            n = piece.numel()
            m = self.m[i][start : start + n]
            v = self.v[i][start : start + n]
            m.mul_(b1).add_(z, alpha=(1 - b1) * grad)
            v.mul_(b2).addcmul_(z, z, value=(1 - b2) * grad * grad)
            denom = v.sqrt().div_(v_corr).add_(self.adam_eps)
            piece.addcdiv_(m, denom, value=-step_size)
        return hook

    def step(self, perturber: Perturber, seed: int, pre: Sequence[float], restore: float,
             grad: float, lr: float, loss_fn: LossFn) -> tuple[float, ...]:
        """Update the moments along ``seed`` and move by Adam's rule (see :meth:`ZOOptimizer.step`)."""
        if not self.m:
            self.bind(perturber)
        perturber.apply(seed, (restore,), final=self._hook(grad, lr))
        return (*pre, restore)

    def replay(self, perturber: Perturber, seed: int, alphas: Sequence[float],
               grad: float | None, lr: float | None) -> None:
        """Replay a logged step: the moments and the parameters move as they did."""
        if not self.m:
            self.bind(perturber)
        perturber.apply(seed, tuple(alphas), final=self._hook(float(grad or 0.0), float(lr or 0.0)))

    def hyperparameters(self) -> dict[str, Any]:
        """beta1, beta2 and adam_eps, which with the name rebuild this optimizer."""
        return {"beta1": self.beta1, "beta2": self.beta2, "adam_eps": self.adam_eps}


@dataclass(frozen=True)
class OptimizerInfo:
    """What a scenario's ``optimizer.name`` selects.

    ``family`` zo: forward-only, built by :attr:`zo_class`; fo: backprop (torch's SGD or
    Adam, see :mod:`fedzo.zo.first_order`). ``federated``: whether a federated run can
    use it (zo: its update is a coefficient times a seeded direction, so clients send
    scalars; fo: the FedAvg baseline). The schema's allowed names derive from this.
    """

    name: str
    family: Literal["zo", "fo"]
    federated: bool
    description: str
    zo_class: type[ZOOptimizer] | None = None


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer", "optimizer.name")
for _cls, _fed, _desc in (
    (ZOSGD, True, "MeZO's ZO-SGD"),
    (ZOSGDSign, True, "ZO-SGD on the sign of the projected gradient"),
    (ZOSGDCons, False, "conservative ZO-SGD (extra probes on the client's batch)"),
    (ZOSGDMomentum, False, "ZO-SGD with a dense momentum buffer"),
    (ZOAdam, False, "Adam moments of the ZO gradient (two dense buffers)"),
):
    OPTIMIZERS.add(_cls.name, OptimizerInfo(_cls.name, "zo", _fed, _desc, _cls))
OPTIMIZERS.add("fo-sgd", OptimizerInfo("fo-sgd", "fo", True, "backprop SGD (FedAvg when federated)"))
OPTIMIZERS.add("fo-adam", OptimizerInfo("fo-adam", "fo", True, "backprop Adam (FedAvg when federated)"))


def optimizer_names(family: str | None = None, *, federated: bool | None = None) -> tuple[str, ...]:
    """Registered optimizer names, optionally of one family and federated capability."""
    return tuple(name for name, info in OPTIMIZERS.items()
                 if (family is None or info.family == family)
                 and (federated is None or info.federated == federated))


def is_zo(name: str) -> bool:
    """Whether optimizer ``name`` is forward-only (zeroth order)."""
    return OPTIMIZERS.get(name).family == "zo"


def make_zo_optimizer(name: str, **hyper: Any) -> ZOOptimizer:
    """Build a ZO optimiser by registry name; unknown names list the valid ones."""
    cls = OPTIMIZERS.get(name).zo_class
    if cls is None:
        raise ConfigError(f"optimizer.name: {name!r} is a backprop optimizer, not a ZO one; "
                          f"allowed: {', '.join(optimizer_names('zo'))}")
    try:
        return cls(**hyper)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name!r}: bad hyperparameters {hyper}: {exc}") from None
