"""Forward gradients: the exact derivative of the loss along a seeded direction.

Forward-Grad (Baydin et al. 2022; ZO-Bench's forward-gradient baseline; the basis of
SPRY's federated method) replaces the finite difference of a ZO estimator by
forward-mode differentiation: one forward pass carries, next to every activation, its
derivative along the direction ``z(seed)`` (:func:`torch.func.jvp`). The scalar is exactly
``<grad L(x), z>``: no ``eps``, no truncation error. The uplink stays one scalar per
seed, and the update is the same ``-lr x scalar x z(seed)`` as ZO-SGD's, so the server's
replay and every client's catch-up are unchanged.

Cost per direction: one forward with tangents (every matmul after the first trained
parameter also runs on the tangent, and a trained matmul twice: about 2-3 plain forwards)
and 2 regenerations (``z`` is materialized once as the tangent, a dense copy of the
trainable set that the memory model counts, and regenerated once for the update). No
activations are stored: tangents live only as long as their activations.

PyTorch's fused CPU attention kernels have no forward-mode derivative, so the tangent
forward runs attention through SDPA's math kernel (the same arithmetic, unfused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from fedzo.errors import ConfigError
from fedzo.zo.estimators import ESTIMATORS, Estimator, Probe, finite
from fedzo.zo.params import ParamSet
from fedzo.zo.perturb import Perturber

Along = Callable[[Sequence[torch.Tensor]], tuple[float, float]]


class DirectionalLoss:
    """One minibatch's loss: its value (a call) and, when the caller can differentiate it
    in forward mode, its value and derivative along a direction (:meth:`along`)."""

    def __init__(self, value: Callable[[], float], along: Along | None = None) -> None:
        self._value = value
        self._along = along

    def __call__(self) -> float:
        """The loss at the parameters as they are (one plain forward)."""
        return self._value()

    def along(self, tangents: Sequence[torch.Tensor]) -> tuple[float, float]:
        """``(loss, d loss / d a)`` at ``a = 0`` of the parameters moved by ``a x tangents``."""
        if self._along is None:
            raise ConfigError("estimator 'forward-grad' needs a loss it can differentiate in forward mode, and "
                              "this one has none (the batched engine's shared joint forward); allowed: the in-process, "
                              "simulation and deployment engines, the batched engine with per-row client state "
                              "(full weights, prompt, prefix or LoRA tuning), and centralized training")
        return self._along(tangents)


class _Call(nn.Module):
    """Holds ``module`` so that :func:`torch.func.functional_call` can swap its parameters
    while ``loss`` (a closure over ``module``) runs."""

    def __init__(self, module: nn.Module, loss: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.inner = module
        self._loss = loss

    def forward(self) -> torch.Tensor:
        return self._loss()


def module_along(module: nn.Module, params: ParamSet, loss: Callable[[], torch.Tensor]) -> Along:
    """The :meth:`DirectionalLoss.along` of ``loss()``, a closure over ``module`` whose
    trainable parameters are ``params`` (named as in ``module.named_parameters()``)."""
    call = _Call(module, loss)
    names = tuple(f"inner.{n}" for n in params.names)

    def along(tangents: Sequence[torch.Tensor]) -> tuple[float, float]:
        def f(*values: torch.Tensor) -> torch.Tensor:
            return functional_call(call, dict(zip(names, values, strict=True)), ())

        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            out = jvp(f, tuple(params.tensors), tuple(tangents))
        return float(out[0]), float(out[1])

    return along


def _forward_grad(perturber: Perturber, loss_fn: Callable[[], float], seed: int, eps: float) -> Probe:
    """The exact projected gradient along ``z(seed)``; the parameters are not moved."""
    if not isinstance(loss_fn, DirectionalLoss):
        raise ConfigError("estimator 'forward-grad' needs a DirectionalLoss (fedzo.zo.forward_grad) as its loss")
    value, derivative = loss_fn.along(perturber.direction(seed))
    return Probe(finite(derivative, "forward gradient"), finite(value, "loss at x"), (), 0.0)


ESTIMATORS.add("forward-grad", Estimator("forward-grad", _forward_grad, 0, tangent_forwards_per_direction=1,
                                         regenerations_per_direction=2))
