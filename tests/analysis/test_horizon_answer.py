"""Experiment 1's answer at its horizon, on curves made by hand: the horizon rule, the
crossover, the mean curve."""

from __future__ import annotations

import pytest

from analysis.experiments.horizon_answer import Point, bp_slower_for_zo_lead, crossover, horizon, mean_curve


def _curve(pairs: list[tuple[float, float]], n: int = 500) -> list[Point]:
    return [Point(i, t, a, n) for i, (t, a) in enumerate(pairs)]


def test_the_horizon_is_the_first_time_from_60_minutes_the_zo_curve_is_flat() -> None:
    rising = [(t, 0.70 + 0.001 * t) for t in range(0, 125, 5)]  # +1 point every 10 minutes: never flat
    assert horizon(_curve(rising), finished=False)["minutes"] is None
    capped = horizon(_curve(rising), finished=True)
    assert capped["minutes"] == 120 and capped["rule"].startswith("cap")
    flat_at_80 = [(t, min(0.70 + 0.002 * t, 0.80 + 0.0001 * t)) for t in range(0, 125, 5)]
    h = horizon(_curve(flat_at_80), finished=False)
    # the curve bends at 52.6 minutes; the moving average of the last 3 evaluations at H gains
    # over the one at 2H/3: 1.75 points at H = 80 (75-80 against 40-50), 0.95 at H = 85 (against 45-55)
    assert h["rule"] == "flat" and h["minutes"] == 85
    assert all(row["gain"] > 0.01 for row in h["trace"][:-1]) and h["trace"][-1]["gain"] <= 0.01


def test_crossover_is_the_last_change_of_leader_to_zo_and_null_when_backprop_leads_at_the_horizon() -> None:
    zo = _curve([(0, 0.75), (10, 0.78), (20, 0.80), (30, 0.82), (40, 0.83)])
    bp = _curve([(0, 0.50), (5, 0.79), (15, 0.81), (25, 0.815), (35, 0.816)])
    c = crossover(zo, bp, 40)
    # ZO leads at 0, backprop from 5, ZO again from 30 (0.82 > 0.815) until the horizon
    assert c["crossover_minutes"] == 30 and c["leader_at_horizon"] == "zo" and not c["zo_led_from_the_start"]
    assert [x["new_leader"] for x in c["lead_changes"]] == ["bp", "zo"]
    lo, hi = c["at_crossover"]["zo_interval"]
    assert lo < 0.82 < hi and hi - lo == pytest.approx(0.067, abs=0.003)  # Wilson, n = 500
    assert crossover(zo, bp, 25)["crossover_minutes"] is None  # backprop leads at 25 minutes
    ahead = crossover(zo, _curve([(0, 0.5), (40, 0.6)]), 40)
    assert ahead["crossover_minutes"] == 0 and ahead["zo_led_from_the_start"]


def test_the_mean_curve_averages_the_rounds_every_seed_reached() -> None:
    a = [Point(0, 0.0, 0.7, 500), Point(6, 4.0, 0.8, 500), Point(12, 9.0, 0.9, 500)]
    b = [Point(0, 0.0, 0.6, 500), Point(6, 5.0, 0.7, 500)]
    m = mean_curve([a, b])
    assert [(p.round, p.minutes, p.n) for p in m] == [(0, 0.0, 1000), (6, 4.5, 1000)]
    assert [p.accuracy for p in m] == pytest.approx([0.65, 0.75])


def test_experiment_one_carries_the_horizon_answer_and_keeps_its_other_figures(tmp_path) -> None:
    import json
    import shutil
    from pathlib import Path

    from analysis.experiments.equal_memory import attach_horizon, horizon_summary

    committed = Path(__file__).resolve().parents[2] / "analysis" / "results" / "equal_memory" / "results.json"
    shutil.copy(committed, tmp_path / "results.json")
    before = json.loads(committed.read_text())
    before.pop("horizon", None)
    assert horizon_summary(tmp_path / "horizon") is None  # no answer yet: nothing to carry
    zo = _curve([(60, 0.80), (70, 0.81), (80, 0.812), (90, 0.812), (100, 0.812)])
    bp = _curve([(60, 0.82), (70, 0.81), (80, 0.805), (90, 0.80), (100, 0.80)])
    h = horizon(zo, finished=True)
    answer = {"command": "python -m analysis.experiments.horizon --answer", "seeds": {"zo-smollm2": [0], "bp-minilm": [0]},
              "finished": {"zo-smollm2": True, "bp-minilm": False}, "horizon": h,
              "crossovers": [{"curve": "seed 0: zo-smollm2 vs bp-minilm", "seed": 0, "bp": "bp-minilm",
                              **crossover(zo, bp, h["minutes"])}], "plateau_test_accuracy": {}, "mean_curves": {}}
    (tmp_path / "horizon").mkdir()
    (tmp_path / "horizon" / "results.json").write_text(json.dumps(answer))
    attach_horizon(tmp_path)
    after = json.loads((tmp_path / "results.json").read_text())
    carried = after.pop("horizon")
    assert after == before  # every other figure as it was
    assert carried["complete"] is False and "trace" not in carried["horizon"] and "mean_curves" not in carried
    assert carried["crossovers"][0]["crossover_minutes"] == 80  # a tie at 70 is no lead
    table = (tmp_path / "table.md").read_text()
    assert "### At the common horizon" in table and "Partial, not yet the answer" in table


def test_how_much_slower_backprop_would_have_to_be_for_zo_to_lead_at_the_horizon() -> None:
    zo = _curve([(0, 0.75), (20, 0.78), (40, 0.79), (60, 0.80)])
    bp = _curve([(0, 0.50), (5, 0.79), (10, 0.81), (15, 0.79), (20, 0.82), (40, 0.83), (60, 0.83)])
    # backprop stays at or above ZO's 0.80 from 20 minutes on (it dipped to 0.79 at 15): stretched
    # by more than 60 / 20 = 3x its value at the horizon is the 0.79 of before 20 minutes
    assert bp_slower_for_zo_lead(zo, bp, 60) == pytest.approx(3.0)
    assert crossover(zo, bp, 60)["bp_slower_for_zo_lead"] == pytest.approx(3.0)
    stretched = [Point(p.round, p.minutes * 3.01, p.accuracy, p.n) for p in bp]
    assert crossover(zo, stretched, 60)["leader_at_horizon"] == "zo"
    assert crossover(zo, [Point(p.round, p.minutes * 2.99, p.accuracy, p.n) for p in bp], 60)[
        "leader_at_horizon"] == "bp"
    assert bp_slower_for_zo_lead(zo, _curve([(0, 0.5), (60, 0.6)]), 60) is None  # ZO leads already
    assert bp_slower_for_zo_lead(zo, _curve([(0, 0.85), (60, 0.85)]), 60) is None  # no stretch would do
