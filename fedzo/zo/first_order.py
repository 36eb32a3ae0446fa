"""Backprop baselines (FO-SGD, FO-Adam) and the hybrid ZO-FO optimiser.

FO optimisers keep what backprop needs: gradients for every trainable parameter, the
activations autograd saves, and (Adam) two moment buffers. Hybrid ZO-FO (ZO-Bench)
runs backprop on a small chosen part (for example the head or the last block: a
predicate picks it) and ZO on the rest. Autograd only records operations downstream of
tensors that require grad, so activations are stored from the first FO parameter on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fedzo.errors import ConfigError
from fedzo.zo.estimators import EstimatorConfig, finite
from fedzo.zo.optimizers import ZOOptimizer, optimizer_names
from fedzo.zo.params import ParamPredicate, ParamSet
from fedzo.zo.perturb import Perturber
from fedzo.zo.step import StepResult, zo_step

GradLossFn = Callable[[], torch.Tensor]

FO_OPTIMIZERS = optimizer_names("fo")


def torch_optimizer(name: str, params: list[nn.Parameter], lr: float, **hyper: Any) -> torch.optim.Optimizer:
    """The torch optimizer a backprop baseline named ``name`` (``fo-sgd``, ``fo-adam``) steps with."""
    if name == "fo-sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(hyper.get("momentum", 0.0)))
    if name == "fo-adam":
        return torch.optim.Adam(params, lr=lr, betas=(hyper.get("beta1", 0.9), hyper.get("beta2", 0.999)))
    raise ConfigError(f"optimizer: {name!r} is not a first-order optimizer; allowed: {', '.join(FO_OPTIMIZERS)}")


class FOTrainer:
    """One backprop step per call on the parameters of ``module`` that require grad."""

    def __init__(self, module: nn.Module, name: str, lr: float, **hyper: Any) -> None:
        self.params = [p for p in module.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the trainable parameter set is empty: nothing requires grad")
        self.opt = torch_optimizer(name, self.params, lr, **hyper)
        self.name = name

    def step(self, loss_fn: GradLossFn, lr: float) -> float:
        """Forward, backward and an optimiser step; returns the loss."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = loss_fn()
            loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # free gradient memory between steps
        return finite(loss.item(), "loss")


class HybridZOFO:
    """ZO on most parameters, backprop on the part selected by ``fo_select``."""

    def __init__(
        self,
        module: nn.Module,
        fo_select: ParamPredicate,
        perturber_factory: Callable[[ParamSet], Perturber],
        zo_optimizer: ZOOptimizer,
        fo_name: str = "fo-adam",
        fo_lr: float = 1e-4,
    ) -> None:
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        fo_names = {n for n, p in named if fo_select(n, p)}
        if not fo_names:
            raise ConfigError("hybrid ZO-FO: the first-order part is empty; choose a predicate that selects parameters")
        if len(fo_names) == len(named):
            raise ConfigError("hybrid ZO-FO: the first-order part covers every parameter; use fo-sgd/fo-adam instead")
        self.fo_params = [p for n, p in named if n in fo_names]
        zo_set = ParamSet.from_module(module, lambda n, p: p.requires_grad and n not in fo_names)
        # The ZO part never needs autograd: freezing it keeps backprop (and its saved
        # activations) confined to the FO part.
        for n, p in named:
            if n not in fo_names:
                p.requires_grad_(False)
        self.perturber = perturber_factory(zo_set)
        self.zo_optimizer = zo_optimizer
        self.fo = torch.optim.SGD(self.fo_params, lr=fo_lr) if fo_name == "fo-sgd" else torch.optim.Adam(self.fo_params, lr=fo_lr)
        self.fo_lr = fo_lr

    def step(self, loss_fn: Callable[[], float], grad_loss_fn: GradLossFn, seed: int,
             est: EstimatorConfig, lr: float) -> tuple[StepResult, float]:
        """ZO step on the ZO part (FO part frozen), then a backprop step on the FO part."""
        with torch.no_grad():
            result = zo_step(self.perturber, loss_fn, seed, est, self.zo_optimizer, lr)
        for group in self.fo.param_groups:
            group["lr"] = self.fo_lr
        self.fo.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = grad_loss_fn()
            loss.backward()
        self.fo.step()
        self.fo.zero_grad(set_to_none=True)
        return result, finite(loss.item(), "loss")
