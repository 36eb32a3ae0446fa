"""Forward gradients: the exact projected gradient by forward-mode differentiation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedzo.errors import ConfigError
from fedzo.zo import (
    DirectionalLoss,
    EstimatorConfig,
    NoiseSpec,
    ParamSet,
    Perturber,
    UpdateLog,
    apply_entries,
    make_zo_optimizer,
    module_along,
    param_signature,
    zo_step,
)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DirectionalLoss:
    ps = ParamSet.from_module(model)

    def value() -> float:
        with torch.no_grad():
            return float(((model(x) - y) ** 2).mean())

    return DirectionalLoss(value, module_along(model, ps, lambda: ((model(x) - y) ** 2).mean()))


def _autograd_projection(model: nn.Module, loss: torch.Tensor, ps: ParamSet, z: list[torch.Tensor]) -> float:
    """<grad loss, z> by backprop, the reference."""
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, [named[n] for n in ps.names], allow_unused=True)
    return sum(float((g * t).sum()) for g, t in zip(grads, z, strict=True) if g is not None)


def test_the_scalar_is_the_exact_directional_derivative_and_the_step_is_zo_sgds(regression) -> None:
    model, x, y = regression
    ps = ParamSet.from_module(model)
    p = Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024))
    before = ps.snapshot()
    z = p.direction(11)
    reference = _autograd_projection(model, ((model(x) - y) ** 2).mean(), ps, z)
    est = EstimatorConfig(kind="forward-grad")
    assert (est.forwards_per_step, est.tangent_forwards_per_step, est.regenerations_per_step) == (0, 1, 2)
    res = zo_step(p, _loss(model, x, y), 11, est, make_zo_optimizer("zo-sgd"), lr=1e-2)
    (d,) = res.directions
    assert d.grad == pytest.approx(reference, rel=1e-5)
    assert d.alphas == (-1e-2 * d.grad,)  # one move, no probes: the update only
    for n, t, dz in zip(ps.names, ps.tensors, z, strict=True):
        assert torch.allclose(t, before[n] + d.alphas[0] * dz, atol=1e-7)


@pytest.mark.parametrize("opt,q", [("zo-sgd", 1), ("zo-sgd-sign", 3), ("zo-adam", 2)])
def test_training_replays_bitwise(regression, tmp_path, opt: str, q: int) -> None:
    model, x, y = regression
    ps = ParamSet.from_module(model)
    initial = ps.snapshot()
    p = Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024))
    optimizer = make_zo_optimizer(opt)
    est = EstimatorConfig(kind="forward-grad", q=q)
    log = UpdateLog.create({"param_signature": param_signature(ps)}, tmp_path / "log.jsonl")
    first = _loss(model, x, y)()
    for step in range(15):
        log.append_round(step, zo_step(p, _loss(model, x, y), 500 + step, est, optimizer, lr=2e-2).log_entries(step))
    assert _loss(model, x, y)() < first  # it learns
    trained = ps.snapshot()
    ps.load(initial)
    loaded, _ = UpdateLog.load(tmp_path / "log.jsonl")
    apply_entries(Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024)), loaded.entries(),
                  make_zo_optimizer(opt) if optimizer.stateful else None)
    assert all(torch.equal(t, trained[n]) for n, t in zip(ps.names, ps.tensors, strict=True))


def test_a_loss_without_a_forward_mode_derivative_is_refused(regression) -> None:
    model, x, y = regression
    p = Perturber(ParamSet.from_module(model), NoiseSpec("portable", "gaussian"))
    plain = _loss(model, x, y)
    est = EstimatorConfig(kind="forward-grad")
    with pytest.raises(ConfigError, match="forward-grad.*DirectionalLoss"):
        zo_step(p, lambda: plain(), 1, est, make_zo_optimizer("zo-sgd"), lr=1e-2)
    with pytest.raises(ConfigError, match="batched engine"):
        zo_step(p, DirectionalLoss(plain), 1, est, make_zo_optimizer("zo-sgd"), lr=1e-2)


@pytest.mark.parametrize("peft", ["full", "lora", "prompt", "prefix"])
def test_forward_grad_matches_backprop_on_a_transformer(peft: str) -> None:
    """Through a llama-style model and each PEFT wrapping (attention on the math kernel)."""
    from fedzo.config.sections import DataConfig, ModelConfig, RuntimeConfig
    from fedzo.tasks.objective import build_objective

    obj = build_objective(ModelConfig(name="tiny-llama", peft=peft),
                          DataConfig(task="synthetic-sentiment", train_examples=16, eval_examples=8),
                          RuntimeConfig(device="cpu", threads=1), seed=0)
    clf = obj.classifier
    ps = ParamSet.from_module(clf)
    batch = next(iter(clf.batches(obj.train[:8], 8)))
    z = Perturber(ps, NoiseSpec("portable", "gaussian")).direction(3)
    value, derivative = module_along(clf, ps, lambda: clf.loss(batch))(z)
    reference = _autograd_projection(clf, clf.loss(batch), ps, z)
    with torch.no_grad():  # the math attention kernel rounds differently from the fused one
        assert value == pytest.approx(float(clf.loss(batch)), rel=1e-5)
    assert derivative == pytest.approx(reference, rel=1e-4, abs=1e-6)
