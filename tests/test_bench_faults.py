"""`fedzo bench faults` report keys, on a tiny setting."""

from __future__ import annotations

import json

from fedzo.cli import main


def test_bench_faults_json_keys(tmp_path, capsys) -> None:
    from fedzo.bench.faults import run_bench

    r = run_bench(rounds=2, num_clients=3, fraction=0.4, kinds=("crash_after", "byzantine"),
                  byzantine_kinds=("sign_flip",), aggregators=("mean", "running-median-clip"),
                  work_dir=str(tmp_path))
    assert set(r) == {"settings", "faults", "byzantine", "seconds"}
    assert set(r["faults"]) == {"crash_after", "byzantine"}
    for f in r["faults"].values():
        assert {"runs_completed", "identical_after_resume", "lines_lost", "lines_duplicated", "injected",
                "status", "kill_round"} <= set(f)
        assert f["runs_completed"] == 2 and f["identical_after_resume"]
        assert f["lines_lost"] == 0 and f["lines_duplicated"] == 0
    b = r["byzantine"]
    assert {"fraction", "fault_free_accuracy", "initial_accuracy", "kinds"} <= set(b)
    assert set(b["kinds"]["sign_flip"]) == {"mean", "running-median-clip"}
    assert {"final_accuracy", "delta_vs_fault_free", "rejected"} <= set(b["kinds"]["sign_flip"]["mean"])
    json.dumps(r)


def test_bench_faults_is_registered(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit):
        main(["bench", "faults", "--help"])
    assert "--byzantine-kinds" in capsys.readouterr().out


def test_bench_faults_scale_options(tmp_path) -> None:
    """--kinds none leaves out the crash-resume part; more eval examples switch to the large task."""
    from fedzo.bench.faults import run_bench, tiny_run_config

    assert tiny_run_config(rounds=1, num_clients=2, eval_examples=500).data.task == "synthetic-sentiment-large"
    assert tiny_run_config(rounds=1, num_clients=2).data.task == "synthetic-sentiment"
    r = run_bench(rounds=2, num_clients=4, kinds=(), byzantine_kinds=("sign_flip",),
                  aggregators=("median", "reputation"), eval_examples=130, persistent=True, work_dir=str(tmp_path))
    assert r["faults"] == {} and r["settings"]["eval_examples"] == 130
    assert set(r["byzantine"]["kinds"]["sign_flip"]) == {"median", "reputation"} and r["byzantine"]["persistent"]
    # one persistent attacker of 4 clients: the same one tampers in both rounds
    assert r["byzantine"]["kinds"]["sign_flip"]["median"]["injected"] == 2


def test_bench_faults_unknown_kind_is_named(capsys) -> None:
    assert main(["bench", "faults", "--kinds", "crash_after,teleport"]) != 0
    err = capsys.readouterr().err
    assert "teleport" in err and "crash_before" in err


def test_bench_faults_unknown_byzantine_kind_is_named_before_any_run(capsys) -> None:
    assert main(["bench", "faults", "--byzantine-kinds", "sign_flip,bogus"]) != 0
    err = capsys.readouterr().err
    assert "--byzantine-kinds: bogus" in err and "random" in err
