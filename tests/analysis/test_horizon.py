"""The horizon runs' settings and their status report (no run is started here)."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.experiments import horizon


def test_horizon_runs_reach_the_cap_and_evaluate_the_whole_dev_split() -> None:
    for name, per_round in horizon.SECONDS_PER_ROUND.items():
        o = horizon.overrides(name, 2)
        fed = o["federation"]
        assert o["seed"] == 2 and o["data"] == {"eval_examples": 500, "eval_split": "dev"}
        assert fed["rounds"] * per_round >= horizon.CAP_MINUTES * 60  # past the cap of the horizon rule
        assert 1 <= fed["eval_every"] * per_round <= 2 * horizon.EVAL_MINUTES * 60


def test_status_reports_how_far_each_run_got(tmp_path: Path, capsys) -> None:
    run = tmp_path / "runs" / "seed0" / "zo-smollm2"
    run.mkdir(parents=True)
    recs = [{"kind": "round", "round": 0, "sim_seconds": 0.0, "eval_accuracy": 0.7},
            {"kind": "round", "round": 6, "sim_seconds": 300.0, "eval_accuracy": 0.75},
            {"kind": "client", "round": 6}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert horizon.main(["--status", "--out", str(tmp_path)]) == 0
    assert "runs/seed0/zo-smollm2: round 6, 5.0 simulated min, last dev 0.750" in capsys.readouterr().out


def test_the_answer_records_the_command_that_reproduces_it(tmp_path: Path) -> None:
    for name, acc in (("zo-smollm2", lambda m: 0.75 + 0.0005 * m), ("bp-minilm", lambda m: 0.70 + 0.0004 * m)):
        run = tmp_path / "runs" / "seed3" / name
        run.mkdir(parents=True)
        recs = [{"kind": "round", "round": r, "sim_seconds": 300.0 * r, "eval_accuracy": acc(5 * r), "eval_n": 500}
                for r in range(25)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "summary.json").write_text(json.dumps({"name": name}))
    assert horizon.main(["--answer", "--out", str(tmp_path), "--seeds", "3"]) == 0
    command = json.loads((tmp_path / "results.json").read_text())["command"]
    assert command == (f"python -m analysis.experiments.horizon --answer --seeds 3 --contenders zo-smollm2 "
                       f"bp-minilm --out {tmp_path}")


def test_an_unfinished_run_that_stops_before_the_horizon_makes_the_answer_provisional(tmp_path: Path) -> None:
    import pytest

    for name, rounds, done in (("zo-smollm2", 25, True), ("bp-minilm", 9, False)):
        run = tmp_path / "runs" / "seed0" / name
        run.mkdir(parents=True)
        recs = [{"kind": "round", "round": r, "sim_seconds": 300.0 * r, "eval_accuracy": 0.8, "eval_n": 500}
                for r in range(rounds)]  # flat: the horizon is 60 minutes; backprop stops at 40
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        if done:
            (run / "summary.json").write_text(json.dumps({"name": name}))
    assert horizon.main(["--answer", "--out", str(tmp_path), "--seeds", "0"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["horizon"]["minutes"] == 60 and result["short_of_horizon"] == {"seed0/bp-minilm": 40.0}
    assert "Provisional: these runs stop before the horizon: seed0/bp-minilm at 40.0 min" in (
        tmp_path / "table.md").read_text()
    with pytest.raises(SystemExit, match="seed0/bp-minilm at 40.0 min"):
        horizon.main(["--answer", "--test", "--out", str(tmp_path), "--seeds", "0"])


def test_a_backprop_run_paused_at_a_round_keeps_that_rounds_model_and_resumes_exactly(
        tmp_path: Path, monkeypatch) -> None:
    """A paused FedAvg run's test accuracy comes from its own kept weights (no second run),
    and resuming it gives the uninterrupted run's curve and model."""
    import pytest
    import yaml

    from analysis.experiments import equal_memory
    from analysis.experiments.common import run_scenario
    from analysis.experiments.horizon_answer import Point, _test_at, dev_curve, kept_round

    scenario = tmp_path / "bp.yaml"
    scenario.write_text(yaml.safe_dump({
        "version": 2, "name": "tiny-bp", "model": {"name": "tiny-bert", "peft": "full"},
        "data": {"task": "synthetic-sentiment", "train_examples": 32, "batch_size": 8},
        "optimizer": {"name": "fo-adam", "lr": 1e-3}, "runtime": {"threads": 1},
        "federation": {"num_clients": 2, "clients_per_round": 2, "rounds": 2, "fo_local_epochs": 1},
        "fleet": {"devices": [{"profile": "rpi5-2gb", "count": 2}]}}))
    monkeypatch.setitem(equal_memory.CONTENDERS, "bp-minilm", ("tiny backprop", str(scenario)))
    monkeypatch.setitem(horizon.SECONDS_PER_ROUND, "bp-minilm", horizon.CAP_MINUTES * 60 / 5)  # 6 rounds
    monkeypatch.setattr(horizon, "DEV_EXAMPLES", 16)
    monkeypatch.setattr(horizon, "EVAL_MINUTES", 0.0)  # evaluate every round
    out = tmp_path / "out"
    run = out / "runs" / "seed0" / "bp-minilm"

    first = horizon.pause(out, "bp-minilm", 0, 3)
    assert horizon.last_round(run) == 3 and kept_round(run) == 3 and not (run / "summary.json").exists()
    assert first["rounds"] == 3 and first["split"] == "test"
    assert horizon.pause(out, "bp-minilm", 0, 3) == first  # already there: the cached evaluation
    with pytest.raises(SystemExit, match="past round 2"):
        horizon.pause(out, "bp-minilm", 0, 2)
    assert horizon.main(["--pause-at-round", "5", "--out", str(out), "--seeds", "0", "--contenders", "bp-minilm"]) == 0
    assert kept_round(run) == 5
    at_three = _test_at(out, "bp-minilm", 0, Point(3, 0.0, 0.0, 0))  # cached at the pause: no second run
    assert at_three == first and not (out / "runs" / "seed0" / "bp-minilm-to-round3").exists()

    settings = horizon.overrides("bp-minilm", 0)
    settings["federation"]["rounds"] = 5
    reference = tmp_path / "reference"
    run_scenario(scenario, reference, overrides=settings)  # the same five rounds without a stop
    assert [(p.round, p.accuracy) for p in dev_curve(str(run))] == [(p.round, p.accuracy)
                                                                   for p in dev_curve(str(reference))]
    at_five = _test_at(out, "bp-minilm", 0, Point(5, 0.0, 0.0, 0))
    from analysis.experiments.common import cached_evaluation

    again = cached_evaluation(tmp_path / "reference.test.json", reference, "--run", str(reference))
    assert at_five["model_sha256"] is not None and at_five["model_sha256"] == again["model_sha256"]
    assert at_five["accuracy"] == again["accuracy"]
