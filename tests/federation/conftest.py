"""A tiny federated scenario shared by the engine tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedzo.config.federation import FederationConfig
from fedzo.config.scenario import Scenario
from fedzo.records import HOST_MEASURED_KEYS


def tiny_config(*, optimizer: str = "zo-sgd", lr: float = 1e-3, **fed: Any) -> Scenario:
    """4 clients, 2 per round, 3 rounds of K=3 local steps on the tiny model; ``fed`` are
    ``federation:`` keys, every client on the host stand-in."""
    unknown = set(fed) - set(FederationConfig.model_fields)
    assert not unknown, f"not federation keys: {unknown}"
    base: dict[str, Any] = dict(num_clients=4, clients_per_round=2, rounds=3, local_steps=3, round_timeout=120,
                                seed_pool_size=16)
    return Scenario.model_validate({
        "model": {"name": "tiny-llama"}, "runtime": {"device": "cpu", "threads": 1},
        "data": {"task": "synthetic-sentiment", "train_examples": 128, "eval_examples": 32, "batch_size": 8},
        "optimizer": {"name": optimizer, "lr": lr}, "federation": {**base, **fed}})


TIMING_KEYS = HOST_MEASURED_KEYS | {"sim_seconds", "round_sim_seconds", "sim_start", "sim_download_end",
                                    "sim_compute_end", "sim_end"}


def metrics_without_timings(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl minus the fields that measure host time or memory."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if k not in TIMING_KEYS})
    return out


@pytest.fixture(scope="session")
def fed_config() -> Any:
    """The tiny scenario builder."""
    return tiny_config


@pytest.fixture(scope="session")
def strip_timings() -> Any:
    """The metrics reader that drops timings."""
    return metrics_without_timings


def interrupted_then_resumed(config: Any, out: Path, crash_round: int, monkeypatch: Any) -> dict[str, Any]:
    """Run ``config`` into ``out``, interrupt it at the start of ``crash_round`` (as Ctrl-C
    would), then resume it; returns the resumed run's summary."""
    from fedzo.federation.engine import RoundEngine
    from fedzo.federation.run import run_federated

    real = RoundEngine.run_round

    def crash(self: Any, transport: Any, round_: int) -> Any:
        if round_ == crash_round:
            raise KeyboardInterrupt
        return real(self, transport, round_)

    monkeypatch.setattr(RoundEngine, "run_round", crash)
    with pytest.raises(KeyboardInterrupt):
        run_federated(config, out)
    monkeypatch.setattr(RoundEngine, "run_round", real)
    return run_federated(config, out, resume=True)


@pytest.fixture
def interrupt_and_resume(monkeypatch: Any) -> Any:
    """``interrupt_and_resume(config, out, crash_round)`` -> the resumed summary."""
    return lambda config, out, crash_round: interrupted_then_resumed(config, out, crash_round, monkeypatch)
