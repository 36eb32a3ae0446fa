"""Catch-up: bringing a returning client's model to the global model.

One module per policy, registered here by the name a scenario uses
(``federation.catch_up``): ``replay`` (DeComFL), ``seed_pool`` (FedKSeed), ``full``
(the weights) and ``auto`` (the cheaper of replay and full on the client's device).
A policy is a :class:`~fedzo.federation.catchup.base.CatchUpPolicy`; adding one is a
module with that protocol and a line below. Nothing here imports Flower.
"""

from __future__ import annotations

from collections.abc import Callable

from fedzo.federation.catchup.auto import AutoPolicy
from fedzo.federation.catchup.base import (
    CATCH_UP_KINDS,
    CatchUp,
    CatchUpCost,
    CatchUpKind,
    CatchUpPolicy,
    Entry,
    History,
)
from fedzo.federation.catchup.full import FullPolicy
from fedzo.federation.catchup.planner import CatchUpPlanner
from fedzo.federation.catchup.replay import ReplayPolicy, derived_step_seeds
from fedzo.federation.catchup.seed_pool import SeedPool, SeedPoolPolicy
from fedzo.registry import Registry

PolicyFactory = Callable[[int, int], CatchUpPolicy]  # (run seed, seed pool size) -> policy

CATCH_UP_POLICIES: Registry[PolicyFactory] = Registry("catch-up policy", "federation.catch_up")
CATCH_UP_POLICIES.add("replay", lambda seed, size: ReplayPolicy())
CATCH_UP_POLICIES.add("seed_pool", lambda seed, size: SeedPoolPolicy(seed, size))
CATCH_UP_POLICIES.add("full", lambda seed, size: FullPolicy())
CATCH_UP_POLICIES.add("auto", lambda seed, size: AutoPolicy())


def make_policy(name: str, run_seed: int, seed_pool_size: int) -> CatchUpPolicy:
    """The catch-up policy ``name`` of a run; unknown names list the valid ones."""
    return CATCH_UP_POLICIES.get(name)(run_seed, seed_pool_size)


__all__ = [
    "CATCH_UP_KINDS", "CATCH_UP_POLICIES", "AutoPolicy", "CatchUp", "CatchUpCost", "CatchUpKind",
    "CatchUpPlanner", "CatchUpPolicy", "Entry", "FullPolicy", "History", "ReplayPolicy", "SeedPool",
    "SeedPoolPolicy", "derived_step_seeds", "make_policy",
]
