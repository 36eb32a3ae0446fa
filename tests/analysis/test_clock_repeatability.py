"""The host-repeatability floor of the clock validation (analysis/experiments/clock_repeatability.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.experiments import clock_repeatability as cr


def _run(path: Path, measured: dict[str, float], predicted: float) -> Path:
    cases = [{"label": k, "measured_seconds": m, "relative_error": (predicted - m) / m} for k, m in measured.items()]
    path.write_text(json.dumps({"cases": cases}))
    return path


def test_the_floor_is_the_best_any_single_prediction_can_do() -> None:
    measured = [20.0, 30.0, 25.0]
    best = 2 * 30.0 * 20.0 / 50.0
    assert max(abs(best - m) / m for m in measured) == pytest.approx(cr.floor(measured))
    for p in (best * 0.97, best * 1.03):  # any other prediction does worse on one of the runs
        assert max(abs(p - m) / m for m in measured) > cr.floor(measured)


def test_runs_are_lined_up_by_case_and_tabled(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a.json", {"x": 10.0, "y": 4.0, "only-a": 1.0}, 10.0)
    b = _run(tmp_path / "b.json", {"x": 20.0, "y": 4.4}, 10.0)
    out = tmp_path / "out"
    assert cr.main([str(a), str(b), "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in result["cases"]] == ["x", "y"]  # a case missing from a run is left out
    assert result["cases"][0]["max_over_min"] == pytest.approx(2.0)
    assert result["max_floor"] == pytest.approx(1 / 3) and result["cases_with_floor_over_15_percent"] == 1
    assert "| x | 10.00 (+0.0%) | 20.00 (-50.0%) | 2.00 | 33.3% |" in (out / "table.md").read_text()


def test_bad_input_names_the_file(tmp_path: Path, capsys) -> None:
    a = _run(tmp_path / "a.json", {"x": 1.0}, 1.0)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert cr.main([str(a), str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.json: not a `fedzo calibrate --validate --json` output" in capsys.readouterr().err
    assert cr.main([str(a)]) == 2
