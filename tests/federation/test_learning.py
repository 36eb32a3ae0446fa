"""Training learns. Every other federated test is an equality (resume = uninterrupted,
engine A = engine B), which a bug shared by all engines passes. Here the tiny model goes
from chance to a stated accuracy on the synthetic sentiment task, through the
seeds-and-scalars protocol and through FedAvg. Runs are seeded, so the figures in the
comments are what these exact runs give."""

from __future__ import annotations

from pathlib import Path

from fedzo.bench.faults import tiny_run_config
from fedzo.federation.run import run_federated
from fedzo.stats import wilson_interval

EVAL = 120


def test_zo_seeds_and_scalars_learn_the_synthetic_task(tmp_path: Path) -> None:
    # 20 clients x 40 rounds x 3 ZO steps on all weights (~45 s on 2 idle cores): 0.483 -> 0.792
    cfg = tiny_run_config(rounds=40, num_clients=20, lr=1e-3, train_examples=2000, eval_examples=EVAL,
                          eval_every=40)
    s = run_federated(cfg, tmp_path / "zo", progress="none")
    assert s.initial_accuracy is not None and s.final_accuracy is not None
    assert s.initial_accuracy <= 0.55  # a balanced two-class task at chance
    assert s.final_accuracy >= 0.70 and wilson_interval(s.final_accuracy, EVAL)[0] > 0.6


def test_fedavg_learns_the_synthetic_task(tmp_path: Path) -> None:
    # 4 clients x 5 rounds x one local epoch of backprop with Adam: 0.5 -> 0.975
    cfg = tiny_run_config(rounds=5, num_clients=4, lr=1e-3, train_examples=160, eval_examples=EVAL, eval_every=5,
                          fo_local_epochs=1)
    cfg = cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update={"name": "fo-adam"})})
    s = run_federated(cfg, tmp_path / "fedavg", progress="none")
    assert s.initial_accuracy is not None and s.final_accuracy is not None
    assert s.initial_accuracy <= 0.55
    assert s.final_accuracy >= 0.90 and wilson_interval(s.final_accuracy, EVAL)[0] > 0.8
