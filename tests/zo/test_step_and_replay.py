"""Perturbation arithmetic, fused vs unfused steps, and bitwise replay of the log."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from fedzo.errors import ConfigError, ReplayMismatch
from fedzo.zo import (
    BlockSchedule,
    EstimatorConfig,
    LogEntry,
    MagnitudeMask,
    NoiseSpec,
    ParamSet,
    Perturber,
    RandomMask,
    UpdateLog,
    apply_entries,
    check_signature,
    default_blocks,
    make_zo_optimizer,
    param_signature,
    zo_step,
)


def _loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def f() -> float:
        with torch.no_grad():
            return float(((model(x) - y) ** 2).mean())
    return f


def test_perturb_then_restore_returns_parameters(regression) -> None:
    model, _, _ = regression
    ps = ParamSet.from_module(model)
    before = ps.snapshot()
    p = Perturber(ps, NoiseSpec("portable", "gaussian", chunk_size=1024))
    p.apply(3, (1e-3,))
    p.apply(3, (-1e-3,))
    # float rounding only: |theta| <= ~1, eps*|z| <= ~5e-3, so error <= a few ulp(1) ~ 1e-6
    for name, t in zip(ps.names, ps.tensors, strict=True):
        assert torch.allclose(t, before[name], atol=1e-6, rtol=0), name


def test_fused_step_equals_unfused_step(regression) -> None:
    model, x, y = regression
    ps = ParamSet.from_module(model)
    start = ps.snapshot()
    spec = NoiseSpec("portable", "gaussian", chunk_size=1024)
    p = Perturber(ps, spec)
    res = zo_step(p, _loss_fn(model, x, y), 42, EstimatorConfig(eps=1e-3), make_zo_optimizer("zo-sgd"), lr=1e-2)
    fused = ps.snapshot()
    # unfused reference: restore, then update, as separate passes (4 regenerations)
    ps.load(start)
    p.apply(42, (1e-3,))
    p.apply(42, (-2e-3,))
    p.apply(42, (1e-3,))
    p.apply(42, (-1e-2 * res.grads[0],))
    for name, t in zip(ps.names, ps.tensors, strict=True):
        assert torch.allclose(t, fused[name], atol=1e-6, rtol=0), name


CASES = [
    {"opt": "zo-sgd"},
    {"opt": "zo-sgd-sign"},
    {"opt": "zo-sgd-cons"},
    {"opt": "zo-sgd-mmt"},
    {"opt": "zo-adam"},
    {"opt": "zo-sgd", "gen": "torch"},
    {"opt": "zo-sgd", "dist": "rademacher"},
    {"opt": "zo-sgd", "est": "one-sided", "q": 3},
    {"opt": "zo-sgd", "est": "fzoo", "q": 4, "dist": "rademacher"},
    {"opt": "zo-sgd", "mask": "random"},
    {"opt": "zo-adam", "mask": "magnitude"},
    {"opt": "zo-sgd", "blocks": True},
]


def _build(ps: ParamSet, case: dict) -> Perturber:
    spec = NoiseSpec(case.get("gen", "portable"), case.get("dist", "gaussian"), chunk_size=1024)
    mask = None
    if case.get("mask") == "random":
        mask = RandomMask(0.3, mask_seed=9)
    elif case.get("mask") == "magnitude":
        mask = MagnitudeMask(ps, 0.3)
    blocks = BlockSchedule(default_blocks(ps)) if case.get("blocks") else None
    return Perturber(ps, spec, mask=mask, blocks=blocks)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_replay_is_bitwise_equal_to_training(regression, tmp_path, case: dict) -> None:
    model, x, y = regression
    ps = ParamSet.from_module(model)
    initial = ps.snapshot()
    perturber = _build(ps, case)
    opt = make_zo_optimizer(case["opt"])
    est = EstimatorConfig(kind=case.get("est", "central"), eps=1e-3, q=case.get("q", 1))
    log = UpdateLog.create({"param_signature": param_signature(ps)}, tmp_path / "log.jsonl")
    loss0 = _loss_fn(model, x, y)()
    for step in range(12):
        res = zo_step(perturber, _loss_fn(model, x, y), 1000 + step, est, opt, lr=5e-3)
        log.append_round(step, res.log_entries(step))
    trained = ps.snapshot()
    assert _loss_fn(model, x, y)() != loss0

    loaded, report = UpdateLog.load(tmp_path / "log.jsonl")
    assert report.bad_line is None and report.rounds == 12
    ps.load(initial)
    check_signature(loaded, ps)
    replayer = _build(ps, case)
    fresh = make_zo_optimizer(case["opt"]) if opt.stateful else None
    apply_entries(replayer, loaded.entries(), fresh)
    for name, t in zip(ps.names, ps.tensors, strict=True):
        assert torch.equal(t, trained[name]), f"{name} differs after replay"


def test_log_detects_truncated_and_corrupted_lines(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    log = UpdateLog.create({"param_signature": "x"}, path)
    for r in range(3):
        log.append_round(r, [LogEntry(r, 10 + r, (0.5,), 1.0, 0.1)])
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]) + "\n")
    loaded, report = UpdateLog.load(path, repair=True)
    assert report.bad_line == 4 and loaded.last_round == 1
    assert len(path.read_text().splitlines()) == 3  # header + 2 good rounds kept
    # flip a digit inside a good line: CRC catches it
    text = path.read_text().replace('"round":1', '"round":7')
    path.write_text(text)
    _, report = UpdateLog.load(path)
    assert report.bad_line == 3


def test_log_for_another_model_is_refused(regression) -> None:
    model, _, _ = regression
    ps = ParamSet.from_module(model)
    other = ParamSet.from_tensors({"w": torch.zeros(3)})
    log = UpdateLog.create({"param_signature": param_signature(other), "param_count": 1})
    with pytest.raises(ReplayMismatch, match="same model"):
        check_signature(log, ps)


def test_bad_inputs_name_the_value() -> None:
    with pytest.raises(ConfigError, match="'zo-rmsprop'.*allowed: zo-sgd"):
        make_zo_optimizer("zo-rmsprop")
    with pytest.raises(ConfigError, match="'two-sided'.*allowed: central, one-sided"):
        EstimatorConfig(kind="two-sided")
    with pytest.raises(ConfigError, match="eps: 0"):
        EstimatorConfig(eps=0)
    with pytest.raises(ConfigError, match="eps: -1"):
        EstimatorConfig(eps=-1.0)
    with pytest.raises(ConfigError, match="q: 0"):
        EstimatorConfig(q=0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="trainable parameter set is empty"):
        ParamSet.from_module(frozen)


def test_fzoo_scalars_are_normalized_by_the_spread_and_cost_q_plus_one_forwards(regression) -> None:
    model, x, y = regression
    ps = ParamSet.from_module(model)
    p = Perturber(ps, NoiseSpec("portable", "rademacher", chunk_size=1024))
    calls = []
    base = _loss_fn(model, x, y)

    def counted() -> float:
        calls.append(1)
        return base()

    est = EstimatorConfig(kind="fzoo", eps=1e-3, q=5)
    res = zo_step(p, counted, 7, est, make_zo_optimizer("zo-sgd"), lr=1e-2)
    assert len(calls) == est.forwards_per_step == 6  # f(x) once, then one per direction
    # (f_j - f_0) / sigma with sigma the spread of the f_j: the scalars' own spread is exactly 1
    assert statistics.pstdev(res.grads) == pytest.approx(1.0, rel=1e-9)
    assert [s for s, _ in res.probes] == [d.seed for d in res.directions]
    assert all(d.alphas == (-1e-2 / 5 * d.grad,) for d in res.directions)
    with pytest.raises(ConfigError, match="q: 1 is not allowed with estimator 'fzoo'"):
        EstimatorConfig(kind="fzoo", q=1)
    with pytest.raises(ConfigError, match="stateless optimizer"):
        zo_step(p, base, 8, est, make_zo_optimizer("zo-adam"), lr=1e-2)
