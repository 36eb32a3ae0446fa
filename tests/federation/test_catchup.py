"""Catch-up planning: exact replay, seed pool, full, auto, bounded history."""

from __future__ import annotations

import numpy as np
import torch

from fedzo.federation.catchup import CatchUpPlanner, CostModel, SeedPool
from fedzo.zo import NoiseSpec, ParamSet, Perturber, param_digest


def _params(seed: int = 0) -> ParamSet:
    g = torch.Generator().manual_seed(seed)
    return ParamSet.from_tensors({"a": torch.randn(50, generator=g), "b": torch.randn(3, 7, generator=g)})


def _rounds(n: int) -> list[list[tuple[int, float]]]:
    rng = np.random.default_rng(1)
    return [[(int(rng.integers(0, 2**62)), float(rng.normal() * 1e-3)) for _ in range(3)] for _ in range(n)]


def test_replay_catch_up_reaches_the_server_model_bitwise() -> None:
    spec = NoiseSpec("portable", "gaussian", 1024)
    server, client = _params(), _params()
    planner = CatchUpPlanner("replay", server.numel, server.nbytes)
    for c in range(3):
        planner.mark_synced(c, 0)
    srv = Perturber(server, spec)
    for r, entries in enumerate(_rounds(5), start=1):
        for s, coef in entries:
            srv.apply(s, (coef,))
        planner.record_round(r, entries)
    cu = planner.plan(0, 5, lambda: {})
    assert cu.kind == "replay" and len(cu.seeds) == 15
    cp = Perturber(client, spec)
    for s, coef in zip(cu.seeds, cu.coefs, strict=True):
        cp.apply(s, (coef,))
    assert param_digest(client) == param_digest(server)


def test_history_is_compacted_to_the_oldest_need_and_bounded() -> None:
    planner = CatchUpPlanner("replay", 10, 40, history_rounds=3)
    planner.mark_synced(0, 0)
    for r, entries in enumerate(_rounds(10), start=1):
        planner.record_round(r, entries)
    assert planner.history_entries == 9 and planner.base_round == 7
    assert planner.plan(0, 10, lambda: {"w": np.zeros(1)}).kind == "full"  # too far behind
    planner.mark_synced(0, 8)
    assert planner.plan(0, 10, lambda: {}).kind == "replay"


def test_auto_picks_full_when_replay_costs_more_device_time() -> None:
    cheap_weights = CostModel(downlink_bytes_per_second=1e12, regen_seconds_per_element=1.0)
    planner = CatchUpPlanner("auto", 1000, 4000, cost=cheap_weights)
    planner.mark_synced(0, 0)
    planner.record_round(1, _rounds(1)[0])
    assert planner.plan(0, 1, lambda: {"w": np.zeros(1)}).kind == "full"
    planner = CatchUpPlanner("auto", 1000, 4000)
    planner.mark_synced(0, 0)
    planner.record_round(1, _rounds(1)[0])
    assert planner.plan(0, 1, lambda: {}).kind == "replay"


def test_seed_pool_catch_up_has_constant_size() -> None:
    pool = SeedPool(7, 8)
    planner = CatchUpPlanner("seed_pool", 10, 40, pool=pool)
    planner.mark_synced(0, 0)
    for r in range(1, 30):
        seeds = pool.draw(r, 3)
        assert len(set(seeds)) == 3 and set(seeds) <= set(pool.seeds)
        planner.record_round(r, [(s, 0.01 * r) for s in seeds])
    cu = planner.plan(0, 29, lambda: {})
    assert cu.kind == "seed_pool" and len(cu.seeds) <= 8
    assert abs(sum(cu.coefs) - sum(0.03 * r for r in range(1, 30))) < 1e-9
