"""A run directory alone rebuilds the run's global model; `fedzo run` shows progress and plots."""

from __future__ import annotations

import json

import pytest

from fedzo.cli import main
from fedzo.errors import ConfigError
from fedzo.federation.global_model import load_global_model
from fedzo.federation.run import run_federated


@pytest.mark.parametrize("catch_up", ["replay", "seed_pool"])
def test_rebuilt_global_model_matches_the_server(tmp_path, fed_config, catch_up) -> None:
    out = tmp_path / catch_up
    summary = run_federated(fed_config(catch_up=catch_up), out)
    gm = load_global_model(out)
    assert gm.rounds == 3
    assert gm.model_sha256 == summary.model_sha256 and gm.matches_summary is True


def test_evaluate_run_cli_and_errors(tmp_path, fed_config, capsys) -> None:
    out = tmp_path / "r"
    run_federated(fed_config(), out)
    assert main(["evaluate", "--run", str(out), "--split", "test", "--limit", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["matches_summary"] is True and res["n"] == 16 and 0.0 <= res["accuracy"] <= 1.0
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    fedavg = tmp_path / "fedavg"
    run_federated(fed_config(optimizer="fo-sgd", rounds=1), fedavg)
    with pytest.raises(ConfigError, match="FedAvg"):
        load_global_model(fedavg)


def test_progress_bar_plots_and_label_histograms(tmp_path, fed_config, capsys) -> None:
    out = tmp_path / "p"
    run_federated(fed_config(partition="dirichlet", partition_alpha=0.1), out, progress=True, plots=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "acc " in err and "up " in err
    assert list((out / "plots").glob("*.png"))
    fleet = next(json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "fleet")
    hist = fleet["label_histograms"]
    assert len(hist) == 4 and sum(map(sum, hist)) == 128
    assert any(min(row) < 0.25 * max(row) for row in hist)  # alpha 0.1: skewed clients
