"""Rebuild a federated run's global model from its directory.

This is what a user evaluates after a run (``fedzo evaluate --run DIR --split test``). A
ZO run's directory holds no weights, only the update log: the global model is the initial
model with the log replayed exactly as the server applied it (through the run's catch-up
policy and its server optimizer, :mod:`fedzo.zo.server_optimizers`). A FedAvg
run keeps its global trainable tensors after every round (the checkpoint it resumes
from), and those are loaded into the initial model. Either way the result's digest is
checked against ``summary.json`` when the run finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from fedzo import environment
from fedzo.config.scenario import Scenario, scenario_from_dict
from fedzo.errors import ConfigError
from fedzo.federation.parts import build_parts
from fedzo.runs import STATE, RunDir
from fedzo.tasks.objective import Objective
from fedzo.zo import ParamSet, UpdateLog, param_digest
from fedzo.zo.server_optimizers import rebuild


@dataclass
class GlobalModel:
    """The rebuilt model of a run, with what was checked."""

    objective: Objective
    scenario: Scenario
    rounds: int  # rounds replayed
    model_sha256: str
    summary_sha256: str | None  # from summary.json, when the run finished
    torn_line: int | None = None  # a torn last line of the log (an interrupted write), not replayed

    @property
    def matches_summary(self) -> bool | None:
        """True/False when the run has a summary; None when it has none (interrupted)."""
        return None if self.summary_sha256 is None else self.summary_sha256 == self.model_sha256


def load_global_model(run_dir: str | os.PathLike[str], rounds: int | None = None) -> GlobalModel:
    """Replay ``run_dir``'s update log onto the initial model (federated seeds-and-scalars runs):
    all of it, or its first ``rounds`` rounds (a FedAvg run keeps only its last weights)."""
    run = RunDir.read(run_dir)
    stored = run.config()
    kind = stored.pop("kind", None)
    if kind != "federated":
        raise ConfigError(f"{run_dir}: kind {kind!r} is not a federated run; evaluate centralized runs "
                          "from their summary (fedzo train keeps no global log to replay here)")
    sc = scenario_from_dict(stored, str(run.path / "scenario.yaml"), kind="run")
    environment.compare(run.path, environment.capture(device=sc.runtime.device, dtype=sc.model.dtype,
                                                      threads=sc.runtime.threads), "rebuilding")
    parts = build_parts(sc)
    objective = parts.objective
    params = ParamSet.from_module(objective.classifier)
    if not sc.is_zo:
        return _fedavg_model(run, sc, objective, params, rounds)
    if not run.log_path.exists():
        raise ConfigError(f"{run.log_path}: no update log; the run never started a round")
    log, report = UpdateLog.load(run.log_path)  # read only: never repairs someone's run
    if report.bad_line is not None and report.dropped_lines > 1:
        raise ConfigError(
            f"{run.log_path}:{report.bad_line}: this line of the update log is corrupted, and the "
            f"{report.dropped_lines - 1} line(s) after it cannot be trusted; the global model can only be rebuilt "
            f"up to round {log.last_round or 0}. `fedzo run --resume {run_dir}` recomputes the rounds from there")
    if log.header.get("initial_digest") not in (None, param_digest(params)):
        raise ConfigError(f"{run_dir}: the initial model built here differs from the run's "
                          "(different assets or library versions?); cannot rebuild its global model")
    last = log.last_round or 0
    if rounds is not None and not 0 <= rounds <= last:
        raise ConfigError(f"--round {rounds}: {run_dir} has rounds 0..{last} in its update log")
    upto = last if rounds is None else rounds
    rebuild(parts.global_model(params), parts.catch_up(), log, 0, upto,
            lambda: None)  # the parameters are the initial ones already
    summary = run.read_summary() if upto == last else None  # the summary names the last round's model
    return GlobalModel(objective, sc, sum(1 for r, _ in log.rounds if r <= upto), param_digest(params),
                       summary.model_sha256 if summary else None, torn_line=report.bad_line)


def _fedavg_model(run: RunDir, sc: Scenario, objective: Objective, params: ParamSet,
                  wanted: int | None) -> GlobalModel:
    """A FedAvg run's global model: its last checkpointed trainable tensors on the initial model."""
    from safetensors import SafetensorError, safe_open

    from fedzo.federation.server.protocols.fedavg import CHECKPOINT

    path = run.path / STATE / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"{path}: no global weights; this FedAvg run ({sc.optimizer.name}) never finished a round")
    try:
        with safe_open(str(path), framework="pt") as f:
            rounds = int((f.metadata() or {}).get("round", 0))
            if wanted is not None and wanted != rounds:
                raise ConfigError(f"--round {wanted}: a FedAvg run keeps only its last global weights (round "
                                  f"{rounds} in {path}); run the scenario again with federation.rounds: {wanted}")
            params.load({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise ConfigError(f"{path}: unreadable global weights ({exc}); `fedzo run --resume {run.path}` "
                          "recomputes the run from its last good round") from None
    summary = run.read_summary()
    return GlobalModel(objective, sc, rounds, param_digest(params), summary.model_sha256 if summary else None)
