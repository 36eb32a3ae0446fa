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
