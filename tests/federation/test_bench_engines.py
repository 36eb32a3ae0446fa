"""`fedzo bench engines`: every engine timed on the same cases, ratios to in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedzo.bench.engines import GOALS, Case, check_engines, format_report, run_bench
from fedzo.errors import ConfigError

TINY = str(Path(__file__).parents[2] / "scenarios" / "batched-tiny.yaml")


def _check(report: dict, engines: tuple[str, ...]) -> dict:
    (row,) = report["results"]
    assert row["participants"] == 3 and row["local_steps"] == 4
    assert set(row["engines"]) == set(engines)
    base = row["engines"]["inprocess"]["seconds_per_round"]
    for e, v in row["engines"].items():
        assert v["inprocess_over_engine"] == pytest.approx(base / v["seconds_per_round"])
        assert v["client_steps_per_host_second"] == pytest.approx(3 * 4 / v["seconds_per_round"])
        assert len(v["round_seconds"]) == 2 and all(s > 0 for s in v["round_seconds"])
        # the same model, whatever the engine: bitwise, or (the batched engine's shared virtual
        # tokens round each pass differently) within float32 rounding of the losses
        assert v["update_log_bitwise_equal_inprocess"] is True or (e == "batched" and
                                                                    v["scalars_max_relative_difference"] < 1e-3)
        if e != "inprocess":
            assert report[f"{e}_over_inprocess_tiny_3"] == v["inprocess_over_engine"]
    ceiling = row["forward_ceiling"]
    assert ceiling["rows"] == 24 and ceiling["batch_size"] == 8  # 3 participants x 8 rows
    assert ceiling["own_tokens"] <= ceiling["joint_tokens"] <= ceiling["separate_tokens"]  # packing cuts padding
    assert ceiling["separate_over_joint"] == pytest.approx(ceiling["separate_seconds"] / ceiling["joint_seconds"])
    # the goals are on the suite's cases; a smaller run says they were not measured
    assert set(report["goals"]) == set(GOALS)
    assert all(g["measured"] is None and g["met"] is None for g in report["goals"].values())
    text = format_report(report)
    assert "forward ceiling: 24 rows" in text and "not measured" in text
    return row


def test_bench_engines_times_inprocess_and_batched(tmp_path: Path) -> None:
    report = run_bench((Case("tiny", TINY, (3,), rounds=2),), ("batched",))
    row = _check(report, ("inprocess", "batched"))
    assert row["batching"][0].startswith("rows: 3 clients, 8 joint turns")
    # the joint forwards are part of each round: the round without anything else is faster
    batched = row["engines"]["batched"]
    assert 0 < batched["joint_forward_seconds_per_round"] < batched["seconds_per_round"]
    assert batched["forwards_only_over_inprocess"] > batched["inprocess_over_engine"]
    assert "joint_forward_seconds_per_round" not in row["engines"]["inprocess"]
    assert "batched joint forwards:" in format_report(report)


def test_a_batched_round_without_joint_forwards_reports_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batched engine that ran its clients one at a time (its joint forwards took 0 s) has no
    forwards-only bound to report (it divided by zero)."""
    from fedzo.bench import engines

    fake = engines.Timings({"inprocess": [0.2], "batched": [0.1]}, {"inprocess": {b"log"}, "batched": {b"log"}},
                           ["sequential: 2 clients"], [0.0])
    monkeypatch.setattr(engines, "time_engines", lambda *a: fake)
    monkeypatch.setattr(engines, "forward_ceiling", lambda *a: {})
    monkeypatch.setattr(engines, "log_difference", lambda *a: 0.0)
    row = engines._row(Case("tiny", TINY, (2,), rounds=1), 2, ("inprocess", "batched"), 1, tmp_path)
    batched = row["engines"]["batched"]
    assert batched["inprocess_over_engine"] == pytest.approx(2.0) and "forwards_only_over_inprocess" not in batched


@pytest.mark.slow
def test_bench_engines_times_the_simulation_engine_too(tmp_path: Path) -> None:
    _check(run_bench((Case("tiny", TINY, (3,), rounds=2),), ("batched", "simulation")),
           ("inprocess", "batched", "simulation"))


def test_bench_engines_refuses_unknown_engines() -> None:
    with pytest.raises(ConfigError, match="--engines: gpu not known; allowed: inprocess, batched, simulation"):
        check_engines(("gpu",))
    assert check_engines(("batched", "inprocess")) == ("inprocess", "batched")


def test_the_committed_engines_report_matches_its_table() -> None:
    """analysis/results/engines/engines.md is what `fedzo bench engines` prints for engines.json."""
    import json

    root = Path(__file__).parents[2] / "analysis" / "results" / "engines"
    report = json.loads((root / "engines.json").read_text(encoding="utf-8"))
    assert (root / "engines.md").read_text(encoding="utf-8") == format_report(report) + "\n"
    assert set(report["goals"]) == set(GOALS) and all(g["measured"] is not None for g in report["goals"].values())
    assert all(v["update_log_bitwise_equal_inprocess"] or r["case"] != "tiny" or v["scalars_max_relative_difference"] < 1e-3
               for r in report["results"] for v in r["engines"].values())
