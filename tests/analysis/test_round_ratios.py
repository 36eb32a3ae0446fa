"""The client-round ratio check reads run directories: the priced and the measured compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.experiments.round_ratios import compare, main
from fedzo.config.scenario import load_scenario
from fedzo.federation.run import run_federated

ROOT = Path(__file__).resolve().parents[2]


def test_round_ratios_compare_priced_with_measured_client_rounds(tmp_path: Path, capsys) -> None:
    sc = load_scenario(ROOT / "scenarios" / "smoke-tiny.yaml")
    sc = sc.model_copy(update={"federation": sc.federation.model_copy(update={"rounds": 1})})
    runs = [tmp_path / f"r{i}" for i in range(2)]
    for run in runs:
        run_federated(sc, run)
    result = compare([runs[0]], [runs[1]])
    assert result["a"]["client_rounds"] == result["b"]["client_rounds"] >= 1  # trained ones (not offline)
    assert result["predicted_ratio"] == pytest.approx(1.0)  # the same configuration, priced alike
    assert result["measured_ratio"] > 0
    assert result["ratio_error"] == pytest.approx(result["predicted_ratio"] / result["measured_ratio"] - 1)
    assert main(["--a", str(runs[0]), "--b", str(runs[1]), "--out", str(tmp_path / "r.json")]) == 0
    assert "A/B client-round: predicted 1.000" in capsys.readouterr().out and (tmp_path / "r.json").is_file()
