"""The allocator-constant fit of the memory model (analysis/experiments/allocator_fit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.experiments import allocator_fit as af
from fedzo.devices.validate import ValidationCase, predict

CASES = [ValidationCase("smollm2-135m", "zo", 16, 64), ValidationCase("smollm2-135m", "bp", 4, 64, optimizer="adam"),
         ValidationCase("minilm-l6", "zo", 32, 128), ValidationCase("minilm-l6", "bp", 8, 128),
         ValidationCase("smollm2-135m", "zo", 8, 64, peft="prompt")]


def _validation(path: Path, constants: tuple[float, float, float]) -> Path:
    """A validation file whose measurements are exactly the model's peaks under ``constants``."""
    slack, reserve, per_weight = constants
    rows = []
    for case in CASES:
        b = predict(case, runtime_overhead=400_000_000, allocator=False)
        measured = b.total - b.runtime_overhead + slack * b.largest_phase + reserve + per_weight * b.weights
        rows.append({"case": case.__dict__, "label": case.label, "rss_import": 400_000_000, "measured": int(measured)})
    path.write_text(json.dumps(rows))
    return path


def test_the_fit_recovers_constants_on_its_grid_and_left_out_cases_agree(tmp_path: Path) -> None:
    truth = (0.30, 20e6, 0.10)
    result = af.run(_validation(tmp_path / "v.json", truth), current=(0.25, 28e6, 0.04))
    fitted = result["fitted"]
    assert (fitted["slack"], fitted["reserve_bytes"], fitted["per_weight"]) == pytest.approx(truth)
    assert fitted["max_abs_error"] < 1e-6 and result["left_out_max_abs_error"] < 1e-6
    assert result["current"]["max_abs_error"] > 0.01  # other constants do not fit these peaks
    assert result["rows_within_10pct_left_out"] == len(CASES)
    table = af.format_table(result)
    assert "slack 0.30, reserve 20 MB + 0.10 x weights" in table and table.count("| smollm2-135m") == 3


def test_main_writes_the_results_next_to_the_validation(tmp_path: Path) -> None:
    v = _validation(tmp_path / "v.json", (0.35, 25e6, 0.15))
    assert af.main(["--validation", str(v), "--out", str(tmp_path / "fit")]) == 0
    r = json.loads((tmp_path / "fit" / "results.json").read_text())
    assert r["fitted"]["slack"] == pytest.approx(0.35) and (tmp_path / "fit" / "table.md").exists()
