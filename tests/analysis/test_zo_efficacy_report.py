"""The budget extrapolation and figure of the ZO-methods experiment (issue 17)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from analysis.experiments.zo_efficacy_report import BEYOND, cell_extrapolation, extrapolate, extrapolation_cell, figure


def _points(a: float, b: float, budgets: list[int], n: int = 1000) -> list[dict[str, float]]:
    """Points exactly on accuracy = a + b ln(forwards)."""
    return [{"forwards": f, "accuracy": a + b * math.log(f), "n": n} for f in budgets]


def test_an_exact_log_linear_trend_is_solved_for_the_target() -> None:
    a, b = 0.5, 0.03
    e = extrapolate(_points(a, b, [100, 200, 400, 800]), target=0.85, host_seconds_per_forward=1.8)
    want = math.exp((0.85 - a) / b)  # about 1.2e5 forward passes
    assert e["forwards"] == pytest.approx(want, rel=1e-9)
    assert e["slope_per_doubling"] == pytest.approx(b * math.log(2))
    lo, hi = e["forwards_range"]
    assert lo < want < hi  # the slope's interval brackets the central estimate
    assert e["host_hours"] == pytest.approx(want * 1.8 / 3600)
    assert e["estimate"] is True and "reason" not in e


def test_a_flat_or_falling_trend_has_no_estimate_and_an_unbounded_range() -> None:
    e = extrapolate(_points(0.8, -0.01, [100, 200, 400]), target=0.85)
    assert e["forwards"] is None and e["forwards_range"][1] is None and "does not rise" in e["reason"]
    assert extrapolation_cell(e).startswith("n/a")


def test_noisy_points_give_an_upper_end_that_is_unbounded() -> None:
    """Three noisy points on 300 examples cannot exclude a flat trend: the upper end is open."""
    pts = [{"forwards": f, "accuracy": y, "n": 300} for f, y in [(240, 0.763), (480, 0.797), (800, 0.79)]]
    e = extrapolate(pts, target=0.85)
    assert e["forwards"] is not None and e["forwards_range"][1] is None
    assert "unbounded" in extrapolation_cell(e)


def test_round_zero_and_single_budgets_are_not_a_trend() -> None:
    e = extrapolate([{"forwards": 0, "accuracy": 0.75, "n": 300}, {"forwards": 80, "accuracy": 0.8, "n": 300}])
    assert e["forwards"] is None and e["reason"] == "fewer than two evaluated budgets"


def test_a_points_accuracy_of_one_does_not_break_the_weights() -> None:
    e = extrapolate([{"forwards": 10, "accuracy": 0.9, "n": 20}, {"forwards": 20, "accuracy": 1.0, "n": 20}],
                    target=0.95)
    assert e["forwards"] is not None and math.isfinite(e["forwards"])


def test_a_search_row_is_extrapolated_from_its_curve_and_drawn(tmp_path: Path) -> None:
    curve = [{"round": r, "accuracy": acc, "n": 300, "interval": [acc - 0.05, acc + 0.05], "sim_seconds": 40.0 * r}
             for r, acc in [(0, 0.75), (2, 0.76), (4, 0.78), (8, 0.80)]]
    row = {"method": "zo-sgd", "peft": "prompt", "lr": 1e-3, "rounds": 8, "forwards": 640, "host_seconds": 1280.0,
           "curve": curve, "clock": "flops-estimate"}
    e = cell_extrapolation(row)
    assert e["points"] == 3  # rounds 2, 4 and 8: 160, 320 and 640 forward passes
    assert e["host_hours"] == pytest.approx(e["forwards"] * 2.0 / 3600)  # 1280 host s / 640 forwards
    figure([row, {**row, "method": "fzoo", "lr": 1e-2}], tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert BEYOND > 1e6
