"""Estimator unbiasedness on a quadratic; every optimiser lowers a convex loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedzo.zo import (
    EstimatorConfig,
    NoiseSpec,
    ParamSet,
    Perturber,
    Schedule,
    make_zo_optimizer,
    zo_step,
)
from fedzo.zo.first_order import FOTrainer, HybridZOFO


def test_spsa_mean_approaches_true_gradient_on_quadratic() -> None:
    d = 10
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g)
    A = a @ a.T / d + torch.eye(d)
    x = torch.randn(d, generator=g)
    ps = ParamSet.from_tensors({"x": x})
    true_grad = A @ x
    p = Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024))

    def f() -> float:
        v = ps.tensors[0].double()
        return float(0.5 * v @ A.double() @ v)

    est = EstimatorConfig(eps=1e-2)
    n = 4000
    acc = torch.zeros(d)
    for s in range(n):
        probe = est.estimator.probe(p, f, s, est.eps)
        p.apply(s, (probe.restore,))
        acc += probe.grad * p.direction(s)[0]
    mean = acc / n
    # E[g z] = grad for Gaussian z (central differences are exact on a quadratic).
    # Relative std of the mean ~ sqrt((d + 1) / n) = 0.05; tolerance 0.2 is 4 sigma.
    rel = (mean - true_grad).norm() / true_grad.norm()
    assert rel < 0.2, f"relative error {rel:.3f}"


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=g)
    w = torch.randn(6, generator=g)
    y = x @ w
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    return model, x, y


def _mse(model, x, y) -> torch.Tensor:
    return ((model(x).squeeze(-1) - y) ** 2).mean()


@pytest.mark.parametrize("name,lr", [
    ("zo-sgd", 0.02), ("zo-sgd-sign", 0.01), ("zo-sgd-cons", 0.02), ("zo-sgd-mmt", 0.005), ("zo-adam", 0.01),
])
def test_zo_optimizers_lower_a_convex_loss(name: str, lr: float) -> None:
    model, x, y = _problem()
    ps = ParamSet.from_module(model)
    p = Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024))
    opt = make_zo_optimizer(name)
    loss_fn = lambda: float(_mse(model, x, y).detach())
    start = loss_fn()
    for step in range(300):
        zo_step(p, loss_fn, step, EstimatorConfig(eps=1e-3), opt, lr)
    end = loss_fn()
    assert end < 0.5 * start, f"{name}: {start:.3f} -> {end:.3f}"


@pytest.mark.parametrize("name,lr", [("fo-sgd", 0.1), ("fo-adam", 0.05)])
def test_fo_baselines_lower_a_convex_loss(name: str, lr: float) -> None:
    model, x, y = _problem()
    fo = FOTrainer(model, name, lr)
    start = float(_mse(model, x, y))
    for _ in range(100):
        fo.step(lambda: _mse(model, x, y), lr)
    assert float(_mse(model, x, y)) < 0.1 * start


def test_hybrid_zo_fo_lowers_the_loss_and_backprops_only_its_part() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    _, x, y = _problem()
    head = model[2]
    hybrid = HybridZOFO(
        model, lambda n, p: any(p is q for q in head.parameters()),
        lambda ps: Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024)),
        make_zo_optimizer("zo-sgd"), fo_name="fo-adam", fo_lr=0.02,
    )
    assert not model[0].weight.requires_grad  # ZO part frozen for autograd
    loss_fn = lambda: float(_mse(model, x, y).detach())
    start = loss_fn()
    for step in range(150):
        hybrid.step(loss_fn, lambda: _mse(model, x, y), step, EstimatorConfig(eps=1e-3), 0.01)
    assert loss_fn() < 0.5 * start


def test_schedules() -> None:
    const = Schedule(0.1)
    lin = Schedule(0.1, "linear", total_steps=10)
    cos = Schedule(0.1, "cosine", total_steps=10, warmup_steps=2)
    assert const(0) == const(9) == 0.1 and not const.decays
    assert lin(0) == 0.1 and abs(lin(5) - 0.05) < 1e-12 and lin(10) == 0.0
    assert cos(0) == 0.05 and cos(2) == 0.1 and cos(10) < 1e-12 and cos.decays
