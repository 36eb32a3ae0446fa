"""Rebuild a federated run's global model from its directory: initial weights + the log.

This is what a user evaluates after a run (``fedzo evaluate --run DIR --split test``): the
run directory holds no weights, only the update log, and the global model is the initial
model with every logged round replayed exactly as the server applied it. The result's
digest is checked against ``summary.json`` when the run finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from fedzo.errors import ConfigError


@dataclass
class GlobalModel:
    """The rebuilt model of a run, with what was checked."""

    objective: Any  # fedzo.train.Objective (classifier, train/eval examples)
    config: Any  # the run's FederatedRunConfig
    rounds: int  # rounds replayed
    model_sha256: str
    summary_sha256: str | None  # from summary.json, when the run finished

    @property
    def matches_summary(self) -> bool | None:
        """True/False when the run has a summary; None when it has none (interrupted)."""
        return None if self.summary_sha256 is None else self.summary_sha256 == self.model_sha256


def load_global_model(run_dir: str | os.PathLike[str]) -> GlobalModel:
    """Replay ``run_dir``'s update log onto the initial model (federated seeds-and-scalars runs)."""
    from fedzo.federation.catchup import SeedPool
    from fedzo.federation.run import coerce_config
    from fedzo.runs import RunDir
    from fedzo.train import build_objective
    from fedzo.zo import NoiseSpec, ParamSet, Perturber, UpdateLog, param_digest

    run = RunDir.open(run_dir)
    stored = run.config()
    kind = stored.pop("kind", None)
    if kind != "federated":
        raise ConfigError(f"{run_dir}: kind {kind!r} is not a federated run; evaluate centralized runs "
                          "from their summary (fedzo train keeps no global log to replay here)")
    cfg = coerce_config(stored)
    fed = cfg.federation
    if not fed.is_zo:
        raise ConfigError(f"{run_dir}: federation.optimizer {fed.optimizer!r} is the FedAvg baseline, whose "
                          "weights are not kept in the run directory; only zo-* runs can be rebuilt")
    objective = build_objective(cfg.objective_config())
    params = ParamSet.from_module(objective.classifier)
    if not run.log_path.exists():
        raise ConfigError(f"{run.log_path}: no update log; the run never started a round")
    log, report = UpdateLog.load(run.log_path)  # read only: never repairs someone's run
    if log.header.get("initial_digest") not in (None, param_digest(params)):
        raise ConfigError(f"{run_dir}: the initial model built here differs from the run's "
                          "(different assets or library versions?); cannot rebuild its global model")
    perturber = Perturber(params, NoiseSpec(fed.generator, fed.distribution, fed.chunk_size))
    if fed.catch_up == "seed_pool":  # the server rebuilds from the pool totals, in pool order
        pool = SeedPool(fed.seed, fed.seed_pool_size)
        for _, entries in log.rounds:
            pool.accumulate([(e.seed, e.coefficient) for e in entries])
        cu = pool.catch_up(log.last_round or 0)
        for seed, coef in zip(cu.seeds, cu.coefs, strict=True):
            perturber.apply(seed, (coef,))
    else:
        for _, entries in log.rounds:
            for e in entries:
                perturber.apply(e.seed, e.alphas)
    summary = run.read_summary()
    return GlobalModel(objective, cfg, len(log.rounds), param_digest(params),
                       summary.get("model_sha256") if summary else None)
