"""Calibration: the fit, the file's errors, the command, and calibrated runs (tiny model)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedzo.calibration.model import Calibration, Host, Point, fit_group, load_calibration
from fedzo.cli import main
from fedzo.devices.work import StepWork, Tuning
from fedzo.errors import ConfigError

HOST = Host(description="test", cpu="cpu", cores=2, threads=1, torch="2")


def test_fit_recovers_overhead_and_slope() -> None:
    pts = [Point(rows=r, width=w, seconds=0.5 + 0.02 * f / 1e9 + 1e-9 * 3e6, flops=f, regen_elements=3e6)
           for r, w, f in ((4, 32, 1e9), (16, 96, 8e9), (8, 64, 3e9))]
    g = fit_group("m", "zo", "full", False, pts, regen_seconds_per_element=1e-9)
    assert g.overhead_seconds == pytest.approx(0.5) and g.seconds_per_gflop == pytest.approx(0.02)
    cal = Calibration(host=HOST, regen_seconds_per_element=1e-9, groups=[g])
    assert cal.step_seconds(g, StepWork(2e9, 3e6)) == pytest.approx(0.5 + 0.04 + 3e-3)


def test_an_adam_step_is_priced_by_its_measured_update_not_its_flops() -> None:
    """Backprop groups are timed with plain SGD; a step with Adam adds the measured per-element
    difference of the two updates in place of the FLOP-modelled one, and a FedAvg client-round
    adds its arrays and optimizer-state price once."""
    g = fit_group("m", "bp", "full", False, [Point(rows=r, width=1, seconds=0.1 * r, flops=1e9 * r, regen_elements=0)
                                             for r in (1, 2, 4)], 1e-9)
    elements = 1e7
    sgd_flops, adam_flops = 2.0 * elements, 12.0 * elements
    old = Calibration(host=HOST, regen_seconds_per_element=1e-9, groups=[g])
    new = old.model_copy(update={"update_seconds_per_element": {"sgd": 0.2e-9, "momentum": 0.5e-9, "adam": 3.2e-9},
                                 "round_seconds_per_element": {"sgd": 7e-9, "momentum": 8e-9, "adam": 10e-9}})
    sgd = StepWork(5e9 + sgd_flops, 0.0, elements, "sgd")
    adam = StepWork(5e9 + adam_flops, 0.0, elements, "adam")
    assert new.step_seconds(g, sgd) == old.step_seconds(g, sgd)  # the groups' own optimizer: as measured
    assert old.step_seconds(g, adam) - old.step_seconds(g, sgd) == pytest.approx(0.1 * 10.0 * elements / 1e9)
    assert new.step_seconds(g, adam) - new.step_seconds(g, sgd) == pytest.approx(3.0e-9 * elements)
    assert new.round_seconds("adam", elements) == pytest.approx(0.1) and old.round_seconds("adam", elements) == 0.0
    assert "update_seconds_per_element" not in old.to_json()  # older files keep their content and digest
    assert load_calibration_text(new.to_json()).update_seconds_per_element == new.update_seconds_per_element
    with pytest.raises(ValueError, match="sgd and adam"):
        _ = sgd + adam


def load_calibration_text(text: str) -> Calibration:
    """A calibration from its JSON text."""
    return Calibration.model_validate_json(text)


def test_bad_calibration_files_say_what_is_missing_and_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such calibration file; make one with `fedzo calibrate --out"):
        load_calibration(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupted JSON.*fedzo calibrate --out"):
        load_calibration(bad)
    bad.write_text(json.dumps({"format": 7}))
    with pytest.raises(ConfigError, match="format 7; this fedzo reads format 1"):
        load_calibration(bad)
    g = fit_group("tiny-llama", "zo", "full", False, [Point(rows=1, width=1, seconds=1, flops=1, regen_elements=0)], 1e-9)
    good = tmp_path / "good.json"
    good.write_text(Calibration(host=HOST, regen_seconds_per_element=1e-9, groups=[g]).to_json())
    cal = load_calibration(good)
    with pytest.raises(ConfigError, match=r"no calibration for smollm2-135m bp lora \(it has: tiny-llama zo full\); "
                                          r"measure it with `fedzo calibrate --model smollm2-135m --method bp --peft lora"):
        cal.group("smollm2-135m", Tuning("bp", "lora"), str(good))
    with pytest.raises(ConfigError, match=r"no calibration for tiny-llama fg full .*`fedzo calibrate --model tiny-llama "
                                          r"--method fg --peft full"):
        cal.group("tiny-llama", Tuning.of("fg"), str(good))  # forward gradients: a group of their own


@pytest.fixture(scope="module")
def tiny_calibration(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cal") / "tiny.calibration.json"
    assert main(["calibrate", "--out", str(out), "--model", "tiny-llama", "--method", "zo", "bp", "fg", "--peft", "full",
                 "--rows", "2", "8", "--widths", "16", "48", "--repeats", "2", "--threads", "1"]) == 0
    return out


def test_calibrate_writes_one_group_per_tuning_and_validates(tiny_calibration: Path, tmp_path: Path, capsys) -> None:
    cal = load_calibration(tiny_calibration)
    assert [g.label() for g in cal.groups] == ["tiny-llama bp full", "tiny-llama fg full", "tiny-llama zo full"]
    assert all(len(g.points) == 4 and g.seconds_per_gflop >= 0 for g in cal.groups)
    assert all(len(g.measured) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", g.measured[0])
               for g in cal.groups)
    steps, rounds = cal.update_seconds_per_element, cal.round_seconds_per_element
    assert steps is not None and rounds is not None and set(steps) == set(rounds) == {"sgd", "momentum", "adam"}
    assert steps["adam"] > steps["sgd"] > 0 and min(rounds.values()) > 0  # Adam streams four buffers, SGD two
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"model": "tiny-llama", "method": m, "peft": "full", "batch": 4, "max_length": 32,
                                  "steps": 2, "off_grid": True} for m in ("zo", "fg")]))
    capsys.readouterr()
    assert main(["calibrate", "--validate", "--out", str(tiny_calibration), "--cases", str(cases), "--json",
                 "--threads", "1", "--processes", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    row, fg = result["cases"]
    assert fg["method"] == "fg" and fg["measured_seconds"] > 0 and fg["predicted_seconds"] > 0
    assert row["measured_seconds"] > 0 and row["predicted_seconds"] > 0 and len(row["shapes"]) == 2
    runs = row["measured_runs_seconds"]  # one per fresh process, sorted; the median is compared
    assert len(runs) == 2 and runs == sorted(runs) and row["measurement_spread"] == pytest.approx(runs[1] / runs[0] - 1)
    assert result["repeats"] == 2
    assert result["max_relative_error"] == pytest.approx(max(abs(r["relative_error"]) for r in (row, fg)))
    assert result["off_grid_cases"] == 2


def test_validate_ratios_measures_pairs_alternately_and_names_the_capability(tiny_calibration: Path, tmp_path: Path,
                                                                             capsys) -> None:
    """--validate-ratios: each pair's step-seconds ratio predicted and measured (in fresh
    processes, alternating), its spread, and the worst ratio error against the goal."""
    from fedzo.environment import cpu_capability

    cal = load_calibration(tiny_calibration)
    assert cal.host.cpu_capability == cpu_capability()  # a new calibration records its CPU type
    case = {"model": "tiny-llama", "peft": "full", "batch": 4, "max_length": 32, "steps": 2}
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"name": "bp / zo", "a": case | {"method": "bp"}, "b": case | {"method": "zo"}}]))
    capsys.readouterr()
    assert main(["calibrate", "--validate-ratios", "--out", str(tiny_calibration), "--cases", str(pairs), "--json",
                 "--threads", "1", "--processes", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["pairs"]
    assert row["pair"] == "bp / zo" and len(row["a_seconds"]) == len(row["b_seconds"]) == 2
    ratios = [a / b for a, b in zip(row["a_seconds"], row["b_seconds"], strict=True)]
    assert row["measured_ratios"] == sorted(ratios) and row["measured_ratio"] == pytest.approx(sum(ratios) / 2)
    assert row["ratio_error"] == pytest.approx(row["predicted_ratio"] / row["measured_ratio"] - 1)
    assert result["max_ratio_error"] == abs(row["ratio_error"]) and result["meets_goal"] == (abs(row["ratio_error"]) <= 0.1)
    assert result["same_capability"] is True and result["host_cpu_capability"] == cpu_capability()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "a": case}]))
    assert main(["calibrate", "--validate-ratios", "--out", str(tiny_calibration), "--cases", str(bad)]) == 2
    assert "expected a JSON list of pairs" in capsys.readouterr().err


def test_calibrated_runs_reproduce_bitwise_and_keep_their_copy(tiny_calibration, tmp_path, fed_config,
                                                               strip_timings, interrupt_and_resume) -> None:
    from fedzo.config.fleet import FleetConfig
    from fedzo.federation.run import run_federated

    cfg = fed_config().model_copy(
        update={"fleet": FleetConfig(default_profile="rpi5-8gb", calibration=str(tiny_calibration))})
    a = run_federated(cfg, tmp_path / "a")
    assert a.sim_time_basis == "calibrated"
    assert (tmp_path / "a" / "calibration.json").read_text() == tiny_calibration.read_text()
    b = interrupt_and_resume(cfg, tmp_path / "b", 2)
    assert b.model_sha256 == a.model_sha256 and b.sim_seconds == a.sim_seconds
    assert strip_timings(tmp_path / "b") == strip_timings(tmp_path / "a")
    plain = run_federated(cfg.model_copy(update={"fleet": FleetConfig(default_profile="rpi5-8gb")}), tmp_path / "c")
    assert plain.sim_time_basis == "flops-estimate" and plain.sim_seconds != a.sim_seconds


def test_reprice_recomputes_a_finished_runs_clock_under_another_calibration(tiny_calibration, tmp_path, fed_config,
                                                                            capsys) -> None:
    """Repricing with the run's own calibration gives its recorded rounds; a dearer one, a longer run."""
    from fedzo.config.fleet import FleetConfig
    from fedzo.federation.run import run_federated

    cfg = fed_config().model_copy(
        update={"fleet": FleetConfig(default_profile="rpi5-8gb", calibration=str(tiny_calibration))})
    summary = run_federated(cfg, tmp_path / "a")
    cal = load_calibration(tiny_calibration)
    dear = tmp_path / "dear.json"
    # every price three times: a step's seconds are linear in them, so compute is exactly 3x
    # whatever the signs of the fit measured here (a loaded host can fit a negative overhead)
    def tripled(prices: dict[str, float] | None) -> dict[str, float] | None:
        return None if prices is None else {k: 3 * v for k, v in prices.items()}

    dear.write_text(cal.model_copy(update={
        "groups": [g.model_copy(update={
            "overhead_seconds": 3 * g.overhead_seconds, "seconds_per_gflop": 3 * g.seconds_per_gflop,
            "regen_seconds_per_element": None if g.regen_seconds_per_element is None
            else 3 * g.regen_seconds_per_element}) for g in cal.groups],
        "regen_seconds_per_element": 3 * cal.regen_seconds_per_element,
        "update_seconds_per_element": tripled(cal.update_seconds_per_element),
        "round_seconds_per_element": tripled(cal.round_seconds_per_element)}).to_json())
    for path, expect in ((tiny_calibration, "same"), (dear, "dearer")):
        assert main(["calibrate", "--reprice", str(tmp_path / "a"), "--out", str(path), "--json"]) == 0
        (r,) = json.loads(capsys.readouterr().out)["runs"]
        assert r["old_sim_seconds"] == pytest.approx(summary.sim_seconds, rel=1e-12)
        assert [x["round"] for x in r["rounds"]] == list(range(1, cfg.federation.rounds + 1))
        if expect == "same":
            assert r["new_sim_seconds"] == r["old_sim_seconds"] and r["new_over_old"] == 1.0
        else:  # compute three times dearer, transfers as they were
            assert 1.0 < r["new_over_old"] < 3.0 and r["new_calibration_sha256"] != r["old_calibration_sha256"]

    scenario, metrics = tmp_path / "a" / "scenario.yaml", tmp_path / "a" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"round_sim_seconds"' in line and '"round": 1,' in line)
    metrics.write_text("\n".join([*lines[:i], lines[i].replace('"round_sim_seconds": ', '"round_sim_seconds": 1'),
                                  *lines[i + 1:]]) + "\n")
    assert main(["calibrate", "--reprice", str(tmp_path / "a"), "--out", str(dear)]) == 2
    assert re.search(r"round 1 recorded .* but its clock recomputed from the records gives", capsys.readouterr().err)
    scenario.write_text(scenario.read_text().replace("deadline_seconds: null", "deadline_seconds: 30.0"))
    assert main(["calibrate", "--reprice", str(tmp_path / "a"), "--out", str(dear)]) == 2
    assert "cannot be repriced exactly, fleet.deadline_seconds is 30.0" in capsys.readouterr().err
    plain = run_federated(cfg.model_copy(update={"fleet": FleetConfig(default_profile="rpi5-8gb")}), tmp_path / "c")
    assert plain.sim_time_basis == "flops-estimate"  # a FLOP-clock run is priced by the calibration instead
    assert main(["calibrate", "--reprice", str(tmp_path / "c"), "--out", str(tiny_calibration), "--json"]) == 0
    (flops,) = json.loads(capsys.readouterr().out)["runs"]
    assert flops["old_calibration_sha256"] is None and flops["old_sim_seconds"] == plain.sim_seconds
    assert flops["new_sim_seconds"] == summary.sim_seconds  # as if it had run calibrated
    assert main(["calibrate", "--reprice", str(tmp_path / "c"), "--merge", str(dear), str(dear)]) == 2
    assert "--merge and --reprice: choose one" in capsys.readouterr().err


def test_a_calibration_point_is_the_median_of_its_repeats(monkeypatch) -> None:
    """A point and a regeneration price keep the typical repeat, not the luckiest one."""
    from fedzo.calibration import measure

    calls: list[int] = []
    assert len(measure.step_times(lambda: calls.append(1), 3)) == 3 and len(calls) == 5  # two warm-ups

    monkeypatch.setattr(measure, "step_times", lambda step, repeats: [1.0, 2.0, 9.0][:repeats])
    points, regen = measure.measure_points("tiny-llama", Tuning.of("zo", "prompt"), [(2, 8)], threads=1, repeats=3)
    assert points[0].seconds == 2.0
    numel = measure.ParamSet.from_module(measure.classifier("tiny-llama", Tuning.of("zo", "prompt"), 1)).numel
    assert regen == pytest.approx(2.0 / numel)


def _calibration(path: Path, seconds: dict[tuple[int, int], float], *, regen: float = 1e-9, cpu: str = "cpu",
                 flops: float = 1e9, gemm: float = 1e11, measured: tuple[str, ...] = ()) -> Path:
    pts = [Point(rows=r, width=w, seconds=s, flops=flops * r * w, regen_elements=0) for (r, w), s in seconds.items()]
    host = HOST.model_copy(update={"cpu": cpu, "benchmarks": {"gemm-fp32": gemm}})
    cal = Calibration(host=host, regen_seconds_per_element=regen,
                      groups=[fit_group("m", "bp", "lora", False, pts, regen, measured=measured)])
    path.write_text(cal.to_json())
    return path


def test_merge_pools_each_point_by_its_median_and_refits(tmp_path: Path, capsys) -> None:
    """Calibrations of one host from different times: each point keeps the median of its seconds."""
    a = _calibration(tmp_path / "a.json", {(1, 1): 1.0, (2, 1): 2.0}, regen=1e-9, gemm=1e11,
                     measured=("2026-12-03T16:30Z",))
    b = _calibration(tmp_path / "b.json", {(1, 1): 3.0, (2, 1): 2.2, (4, 1): 4.0}, regen=3e-9, gemm=2e11,
                     measured=("2026-12-01T09:00Z",))
    c = _calibration(tmp_path / "c.json", {(1, 1): 1.2, (2, 1): 2.4}, regen=2e-9, gemm=3e11)  # older: no times
    out = tmp_path / "merged.json"
    assert main(["calibrate", "--merge", str(a), str(b), str(c), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    cal = load_calibration(out)
    (g,) = cal.groups
    assert [(p.rows, p.width, p.seconds) for p in g.points] == [(1, 1, 1.2), (2, 1, 2.2), (4, 1, 4.0)]
    assert cal.regen_seconds_per_element == pytest.approx(2e-9) and cal.host.benchmarks["gemm-fp32"] == 2e11
    refit = fit_group("m", "bp", "lora", False, g.points, 2e-9)
    assert (g.overhead_seconds, g.seconds_per_gflop) == (refit.overhead_seconds, refit.seconds_per_gflop)
    assert g.measured == ["2026-12-01T09:00Z", "2026-12-03T16:30Z"]  # every calibration pooled, in time order
    assert cal.merged_from == [str(a), str(b), str(c)]
    assert cal.update_seconds_per_element is None  # none of the files measured the optimizer updates
    assert "measured" not in c.read_text() and "merged_from" not in c.read_text()  # files from before the fields
    assert load_calibration(c).to_json() == c.read_text()  # keep their content and digest


def test_merge_refuses_other_hosts_other_work_models_and_validate(tmp_path: Path, capsys) -> None:
    a = _calibration(tmp_path / "a.json", {(1, 1): 1.0})
    other_host = _calibration(tmp_path / "h.json", {(1, 1): 1.0}, cpu="another cpu")
    other_work = _calibration(tmp_path / "w.json", {(1, 1): 1.0}, flops=2e9)
    out = tmp_path / "m.json"
    for files, message in (
            ([a, other_host], r"h\.json: host cpu .another cpu., but .*a\.json has .cpu.; --merge pools"),
            ([a, other_work], r"w\.json: m bp lora at 1 x 1 counts 2e\+09 FLOPs .*another work model"),
            ([a], r"at least two calibration files, got 1")):
        assert main(["calibrate", "--merge", *map(str, files), "--out", str(out)]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert main(["calibrate", "--merge", str(a), str(a), "--validate", "--out", str(out)]) == 2
    assert "--merge and --validate: choose one" in capsys.readouterr().err
    assert not out.exists()  # nothing written on a refusal
