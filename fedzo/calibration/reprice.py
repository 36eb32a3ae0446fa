"""A finished run's simulated clock under another calibration (``fedzo calibrate --reprice``).

A run prices its clients' work with the calibration it started with and keeps that copy,
so its time axis never changes under it. When the reference host is calibrated again, the
work each client did is still in ``metrics.jsonl``: the rows and padded width of every
batch, the bytes each way, the catch-up entries. Repricing rebuilds the run's clock from
its stored scenario twice, with its own calibration and with the new one, times every
client-round from those records and replays the synchronous rounds.

A run priced by FLOP estimates (no ``fleet.calibration``) reprices the same way, its own
clock being the FLOP clock. This is exact only where the clock never decided anything: no deadline, no over-commit,
every device always online, ``catch_up`` not ``auto`` (which picks by modelled time),
compute priced by the model (not measured), and every client of every round kept on its
first attempt. Otherwise who is kept, and so the trained model, could differ, and the run
must be run again. As a check, the rounds recomputed with the run's own calibration must
equal the recorded ones; a run that fails it is refused, not repriced.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fedzo.calibration.model import Calibration, load_calibration
from fedzo.calibration.resolve import RUN_COPY
from fedzo.devices.clock import ClientWork, Clock, simulate_round
from fedzo.errors import ConfigError
from fedzo.records import ClientRecord, RoundRecord
from fedzo.runs import SCENARIO, RunDir

RECOMPUTE_TOLERANCE = 1e-9  # relative: the recorded rounds against the same clock recomputed


def _refusal(scenario: Any, clients: list[ClientRecord]) -> str | None:
    """Why the clock may have decided something in this run (None: it did not)."""
    fleet, fed = scenario.fleet, scenario.federation
    if fleet is not None and fleet.deadline_seconds is not None:
        return f"fleet.deadline_seconds is {fleet.deadline_seconds}: who is late depends on the clock"
    if fleet is not None and fleet.over_commit:
        return f"fleet.over_commit is {fleet.over_commit}: who is kept depends on the clock"
    if fleet is not None and fleet.compute_model != "flops":
        return f"fleet.compute_model is {fleet.compute_model!r}: its compute times are measured, not priced"
    if fed.catch_up == "auto":
        return "federation.catch_up is 'auto': it chooses replay or full by modelled time"
    for r in clients:
        if r.status != "ok" or r.attempt or r.fault:
            what = r.status if r.status != "ok" else f"kept on attempt {r.attempt + 1}" if r.attempt else "faulted"
            return f"client {r.client} in round {r.round} was {what}{f' ({r.fault})' if r.fault else ''}: who is " \
                   "kept depends on the clock"
    return None


def _round_seconds(clock: Clock, clients: list[ClientRecord], start: float) -> float:
    """Simulated duration of one round starting at ``start`` whose clients all finished and
    were kept (computed as the engine does, end minus start, so it rounds the same)."""
    timings = [clock.timing(r.client, ClientWork(r.bytes_down, r.bytes_up, r.catch_up_entries, tuple(r.batches)))
               for r in clients]
    return simulate_round(timings, start=start).duration if timings else 0.0


def _clocks(run: RunDir, scenario: Any, own: Calibration | None, new: Calibration) -> tuple[Clock, Clock]:
    """The run's clock with its own calibration (None: the FLOP clock), and with ``new``."""
    from fedzo.federation.fleet import plan_fleet
    from fedzo.federation.parts import build_parts

    parts = build_parts(scenario)

    def clock(cal: Calibration | None, source: str) -> Clock:
        return plan_fleet(scenario, parts, calibration=cal, calibration_source=source).clock

    return clock(own, str(run.path / RUN_COPY)), clock(new, "the new calibration")


def reprice(run_dir: str | Path, new: Calibration) -> dict[str, Any]:
    """Per round, the recorded simulated seconds and the seconds under ``new``; see the module doc."""
    from fedzo.config.scenario import scenario_from_dict

    run = RunDir.read(run_dir)
    stored = run.config()
    if (kind := stored.pop("kind", None)) != "federated":
        raise ConfigError(f"{run.path}: kind {kind!r} is not a federated run; only federated runs have a "
                          "simulated clock to reprice")
    scenario = scenario_from_dict(stored, str(run.path / SCENARIO), kind="run")
    records = run.records()
    clients = [r for r in records if isinstance(r, ClientRecord)]
    rounds = [r for r in records if isinstance(r, RoundRecord) and r.round > 0]
    if not rounds:
        raise ConfigError(f"{run.path}: no finished round to reprice")
    if (why := _refusal(scenario, clients)) is not None:
        raise ConfigError(f"{run.path}: cannot be repriced exactly, {why}; run the scenario again instead")
    copy = run.path / RUN_COPY
    own_cal = load_calibration(copy) if copy.is_file() else None  # None: priced by FLOP estimates
    own, other = _clocks(run, scenario, own_cal, new)
    rows, old_total, new_total = [], 0.0, 0.0
    for rec in rounds:
        mine = [c for c in clients if c.round == rec.round]
        recorded = rec.round_sim_seconds or 0.0
        again = _round_seconds(own, mine, old_total)
        if not math.isclose(again, recorded, rel_tol=RECOMPUTE_TOLERANCE, abs_tol=1e-12):
            raise ConfigError(f"{run.path}: round {rec.round} recorded {recorded!r} simulated seconds, but its "
                              f"clock recomputed from the records gives {again!r}; this run cannot be repriced")
        priced = _round_seconds(other, mine, new_total)
        old_total, new_total = old_total + recorded, new_total + priced
        rows.append({"round": rec.round, "accuracy": rec.eval_accuracy, "old_sim_seconds": old_total,
                     "new_sim_seconds": new_total, "new_round_sim_seconds": priced})
    return {"run": str(run_dir), "old_calibration_sha256": own_cal.digest() if own_cal else None,
            "new_calibration_sha256": new.digest(), "rounds": rows, "old_sim_seconds": old_total,
            "new_sim_seconds": new_total, "new_over_old": new_total / old_total if old_total else None}
