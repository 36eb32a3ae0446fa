"""The README's walkthrough, end to end: a CSV of labelled reviews to a federated run and a plot."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from fedzo.cli import main

GOOD = ("a warm funny film", "great acting and a clever script", "loved it, the ending is moving")
BAD = ("a boring mess", "two hours i hated", "the plot is dull and the acting weak")


def test_csv_to_federated_run_and_plot(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    rows = [(f"\"{GOOD[i % 3]}, take {i}\"", "good") if i % 2 else (f"\"{BAD[i % 3]}, take {i}\"", "bad")
            for i in range(80)]
    Path("reviews.csv").write_text("review_text,sentiment\n" + "".join(f"{t},{y}\n" for t, y in rows))
    scenario = {
        "version": 2, "model": {"name": "tiny-llama", "peft": "prompt"}, "runtime": {"threads": 1},
        "data": {"task": "reviews.csv", "text_column": "review_text", "label_column": "sentiment",
                 "label_names": ["bad", "good"], "verbalizer": ["bad", "good"],
                 "template": "Review: {text}\nSentiment:", "dev_size": 10, "test_size": 20, "eval_examples": 10},
        "federation": {"num_clients": 2, "clients_per_round": 2, "rounds": 2, "local_steps": 2},
        "fleet": {"devices": [{"profile": "rpi5-8gb", "count": 2}], "calibration": "tiny.calibration.json"},
    }
    Path("reviews.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    # the shipped reference-host calibration covers the embedded models; time the tiny one here
    assert main(["calibrate", "--model", "tiny-llama", "--method", "zo", "--peft", "prompt", "--rows", "2", "4",
                 "--widths", "8", "16", "--repeats", "1", "--threads", "1", "--out", "tiny.calibration.json"]) == 0

    assert main(["validate", "reviews.yaml"]) == 0
    out = capsys.readouterr().out
    assert "task: ok, reviews.csv: 50 train / 10 dev / 20 test; the run trains on 50 and evaluates on 10 dev; " \
           "labels bad, good" in out
    assert "model: ok, tiny-llama" in out and "prompt template 'custom'" in out

    assert main(["run", "reviews.yaml", "--no-progress", "--no-plots"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("reviews: fleet: 2 clients: 2 rpi5-8gb; compute priced by calibration tiny.calibration.json; "
                        "memory_policy refuse")
    assert lines[1].startswith("round 0/2: accuracy ") and "(n 10)" in lines[1]
    summary = json.loads(Path("runs/reviews/summary.json").read_text())
    assert summary["rounds_trained"] == 2 and summary["sim_time_basis"] == "calibrated"

    assert main(["plot", "runs/reviews", "--format", "png"]) == 0
    assert (Path("runs/reviews/plots") / "accuracy_vs_time.png").is_file()
    assert main(["evaluate", "--run", "runs/reviews", "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["n"] == 20 and result["matches_summary"] is True
