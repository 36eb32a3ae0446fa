"""Catch-up planning: exact replay, seed pool, full, auto, bounded history."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from fedzo.federation.catchup import CatchUpPlanner, History, make_policy
from fedzo.zo import NoiseSpec, ParamSet, Perturber, apply_entries, param_digest


@dataclass
class FixedCost:
    """A device where replaying costs ``per_entry`` seconds per entry and the weights ``full``."""

    per_entry: float = 1e-3
    full: float = 1.0

    def replay_seconds(self, client: int, entries: int) -> float:
        return self.per_entry * entries

    def full_seconds(self, client: int) -> float:
        return self.full


def _planner(policy: str, history_rounds: int | None = None, cost: FixedCost | None = None,
             pool_size: int = 8) -> CatchUpPlanner:
    return CatchUpPlanner(make_policy(policy, 7, pool_size), cost or FixedCost(), History(history_rounds))


def _params(seed: int = 0) -> ParamSet:
    g = torch.Generator().manual_seed(seed)
    return ParamSet.from_tensors({"a": torch.randn(50, generator=g), "b": torch.randn(3, 7, generator=g)})


def _rounds(n: int) -> list[list[tuple[int, float]]]:
    rng = np.random.default_rng(1)
    return [[(int(rng.integers(0, 2**62)), float(rng.normal() * 1e-3)) for _ in range(3)] for _ in range(n)]


def test_replay_catch_up_reaches_the_server_model_bitwise() -> None:
    spec = NoiseSpec("portable", "gaussian", 1024)
    server, client = _params(), _params()
    planner = _planner("replay")
    for c in range(3):
        planner.mark_synced(c, 0)
    srv = Perturber(server, spec)
    for r, entries in enumerate(_rounds(5), start=1):
        for s, coef in entries:
            srv.apply(s, (coef,))
        planner.record_round(r, entries)
    cu = planner.plan(0, 5, dict)
    assert cu.kind == "replay" and len(cu.seeds) == 15
    apply_entries(Perturber(client, spec), cu.entries())
    assert param_digest(client) == param_digest(server)


def test_history_is_compacted_to_the_oldest_need_and_bounded() -> None:
    planner = _planner("replay", history_rounds=3)
    planner.mark_synced(0, 0)
    for r, entries in enumerate(_rounds(10), start=1):
        planner.record_round(r, entries)
    assert planner.history_entries == 9 and planner.history.base_round == 7
    assert planner.plan(0, 10, lambda: {"w": np.zeros(1)}).kind == "full"  # too far behind
    planner.mark_synced(0, 8)
    assert planner.plan(0, 10, dict).kind == "replay"


def test_auto_picks_full_when_replay_costs_more_device_time() -> None:
    planner = _planner("auto", cost=FixedCost(per_entry=1.0, full=0.5))  # 3 entries: 3 s > 0.5 s
    planner.mark_synced(0, 0)
    planner.record_round(1, _rounds(1)[0])
    assert planner.plan(0, 1, lambda: {"w": np.zeros(1)}).kind == "full"
    planner = _planner("auto")
    planner.mark_synced(0, 0)
    planner.record_round(1, _rounds(1)[0])
    assert planner.plan(0, 1, dict).kind == "replay"


def test_seed_pool_catch_up_has_constant_size() -> None:
    planner = _planner("seed_pool")
    pool = planner.policy.pool  # type: ignore[attr-defined]
    planner.mark_synced(0, 0)
    for r in range(1, 30):
        seeds = planner.policy.step_seeds(7, r, 3)
        assert len(set(seeds)) == 3 and set(seeds) <= set(pool.seeds)
        planner.record_round(r, [(s, 0.01 * r) for s in seeds])
    cu = planner.plan(0, 29, dict)
    assert cu.kind == "seed_pool" and len(cu.seeds) <= 8
    assert abs(sum(cu.coefs) - sum(0.03 * r for r in range(1, 30))) < 1e-9


def test_unknown_policy_lists_the_valid_names() -> None:
    from fedzo.errors import ConfigError

    with pytest.raises(ConfigError, match="federation.catch_up: 'gossip'.*allowed: replay, seed_pool, full, auto"):
        make_policy("gossip", 0, 8)
