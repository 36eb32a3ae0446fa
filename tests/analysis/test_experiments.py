"""The experiment scripts end to end on the tiny models (seconds, no assets)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from analysis.experiments import byzantine, communication, equal_memory, optimizer_peft, quickstart

TINY_ZO: dict[str, Any] = {
    "name": "tiny-zo", "model": "tiny-llama", "task": "synthetic-sentiment", "train_examples": 64,
    "eval_examples": 32, "threads": 1,
    "federation": {"num_clients": 4, "clients_per_round": 2, "rounds": 2, "local_steps": 2, "lr": 1e-3,
                   "eps": 1e-3, "batch_size": 8, "catch_up": "replay", "eval_every": 1, "seed": 0},
    "fleet": {"devices": [{"profile": "rpi5-2gb", "count": 4}], "memory_policy": "refuse"},
}


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_equal_memory_runs_every_contender_per_seed_and_finds_the_leader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zo = _write(tmp_path / "zo.yaml", TINY_ZO)
    bp_data = {**TINY_ZO, "name": "tiny-bp", "model": "tiny-bert", "peft": "full",
               "federation": {**TINY_ZO["federation"], "optimizer": "fo-adam", "lr": 1e-3, "fo_local_epochs": 1}}
    bp = _write(tmp_path / "bp.yaml", bp_data)
    ckpt = _write(tmp_path / "ckpt.yaml", {
        "version": 2, "name": "tiny-bp-ckpt", "model": {"name": "tiny-llama", "peft": "lora"},
        "data": {"task": "synthetic-sentiment", "train_examples": 64, "eval_examples": 32, "batch_size": 8},
        "optimizer": {"name": "fo-adam", "lr": 1e-3, "checkpointing": True}, "runtime": {"threads": 1},
        "federation": {"num_clients": 4, "clients_per_round": 2, "rounds": 2, "fo_local_epochs": 1, "eval_every": 1},
        "fleet": TINY_ZO["fleet"]})
    fg = _write(tmp_path / "fg.yaml", {**TINY_ZO, "name": "tiny-fg",
                                       "federation": {**TINY_ZO["federation"], "estimator": "forward-grad"}})
    monkeypatch.setattr(equal_memory, "MEMORY_CONFIGS", (equal_memory.MemoryConfig(
        "ZO tiny", "tiny-llama", "zo", "full", "sgd"),))
    out = tmp_path / "out"
    args = ["--out", str(out), "--seeds", "0", "1", "--scenario", f"zo-smollm2={zo}", f"bp-minilm={bp}",
            f"bp-smollm2-ckpt={ckpt}", f"fg-smollm2={fg}"]
    with pytest.raises(SystemExit):  # every comparison needs ZO on every seed
        equal_memory.main([*args, "--one-seed", "zo-smollm2"])
    assert equal_memory.main([*args, "--one-seed", "bp-smollm2-ckpt"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["budget_bytes"] == 1_500_000_000 and result["seeds"] == [0, 1]
    (mem,) = result["memory"]
    assert mem["measured_peak_rss_bytes"] > 50e6 and mem["fits_budget_measured"]
    assert mem["step_tensors_measured_bytes"] > 0 and mem["step_tensors_predicted_bytes"] > 0
    assert set(result["runs"]) == {"zo-smollm2", "bp-minilm", "bp-smollm2-ckpt", "fg-smollm2"}
    assert set(result["summary"]["zo_vs_bp"]) == {"bp-minilm", "bp-smollm2-ckpt"}  # forward gradients are ZO
    for name, runs in result["runs"].items():
        assert [r["seed"] for r in runs] == ([0] if name == "bp-smollm2-ckpt" else [0, 1])
        assert result["summary"]["contenders"][name]["seeds"] == [r["seed"] for r in runs]
        assert all(r["test_n"] > 0 and r["test_interval"][0] <= r["test_accuracy"] <= r["test_interval"][1]
                   for r in runs)
    zo_runs = result["runs"]["zo-smollm2"]
    assert zo_runs[0]["final_accuracy"] != zo_runs[1]["final_accuracy"] or zo_runs[0]["sim_seconds"] != zo_runs[1]["sim_seconds"]
    test = result["summary"]["contenders"]["zo-smollm2"]["test_accuracy"]
    assert test["min"] <= test["mean"] <= test["max"] and test["sd"] >= 0
    for bp_name, seeds in (("bp-minilm", [0, 1]), ("bp-smollm2-ckpt", [0])):
        c = result["summary"]["zo_vs_bp"][bp_name]
        assert c["seeds"] == seeds and len(c["leader_at_end"]) == len(seeds)
        assert set(c["leader_at_end"]) <= {"zo", "bp", "tie"}
    assert (out / "accuracy_vs_time.png").stat().st_size > 10_000
    assert (out / "table.md").read_text() == equal_memory.format_table(result)
    first = (out / "runs" / "seed1" / "zo-smollm2" / "metrics.jsonl").read_text()
    assert equal_memory.main([*args[:2], "--seeds", "1", *args[5:], "--skip-memory"]) == 0
    assert (out / "runs" / "seed1" / "zo-smollm2" / "metrics.jsonl").read_text() == first  # reused, not rerun
    assert json.loads((out / "results.json").read_text())["seeds"] == [1]

    # --reprice: every run's times under another calibration (the repricing itself is tested with the calibration)
    from fedzo.calibration import reprice
    from fedzo.calibration.model import Calibration, Host

    def doubled(run_dir: Path, new: Calibration) -> dict[str, Any]:
        from fedzo.runs import RunDir

        rows = [{"round": r.round, "new_sim_seconds": 2 * (r.sim_seconds or 0.0),
                 "new_round_sim_seconds": 2 * (r.round_sim_seconds or 0.0)} for r in RunDir.open(run_dir).rounds()]
        return {"rounds": rows, "new_sim_seconds": rows[-1]["new_sim_seconds"]}

    monkeypatch.setattr(reprice, "reprice", doubled)
    cal = tmp_path / "cal.json"
    cal.write_text(Calibration(host=Host(description="t", cpu="c", cores=1, threads=1, torch="2"),
                               regen_seconds_per_element=1e-9, groups=[]).to_json())
    assert equal_memory.main([*args[:2], "--seeds", "1", *args[5:], "--skip-memory", "--reprice", str(cal)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["repriced_with"]["calibration"] == str(cal)
    for runs in again["runs"].values():
        assert all(r["sim_seconds"] == pytest.approx(2 * r["sim_seconds_as_run"]) for r in runs)
    assert "Simulated times are repriced under" in (out / "table.md").read_text()


def test_leader_comparison_is_a_step_function() -> None:
    zo = [(0.0, 0.8), (100.0, 0.85)]
    bp = [(0.0, 0.5), (50.0, 0.9)]
    c = equal_memory.compare(zo, bp)
    assert c["leader_at_start"] == "zo" and c["leader_at_end"] == "bp"
    assert c["lead_changes"] == [{"sim_seconds": 50.0, "new_leader": "bp"}]


def test_communication_counts_bytes_to_target_per_seed(tmp_path: Path) -> None:
    scen = _write(tmp_path / "c.yaml", {**TINY_ZO, "fleet": {"devices": [{"profile": "rpi5-8gb", "count": 4}]}})
    out = tmp_path / "out"
    args = ["--out", str(out), "--scenario", str(scen), "--targets", "0.0", "1.01", "--fedavg-rounds", "1",
            "--variants", "zo-replay", "fedavg-lora"]
    assert communication.main([*args, "--seeds", "0", "1"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert [row["seed"] for row in r["runs"]["zo-replay"]] == [0, 1]
    zo, fa = r["runs"]["zo-replay"][0], r["runs"]["fedavg-lora"][0]
    assert zo["to_target"]["0.0"]["round"] == 0 and zo["to_target"]["1.01"] is None
    assert zo["test_n"] > 0 and zo["test_interval"][0] <= zo["test_accuracy"] <= zo["test_interval"][1]
    # per client-round, the uplink of training messages (the handshake is counted apart, as setup); on the
    # wire a few scalars still cost Flower's object headers and ids (about 2 KB), so the tiny model's LoRA
    # adapters are "only" 10x or more
    assert fa["bytes_by_kind"]["train"][0] / fa["client_rounds"] > 10 * zo["bytes_by_kind"]["train"][0] / zo[
        "client_rounds"]
    assert zo["bytes_up"] == sum(up for up, _ in zo["bytes_by_kind"].values())
    summ = r["summary"]["zo-replay"]
    assert summ["to_target"]["0.0"]["reached"] == 2 and summ["to_target"]["1.01"]["reached"] == 0
    assert "0 of 2 (not reached)" in (out / "table.md").read_text()
    # the seeds are different runs (the seed draws the split and the sampling)
    assert r["runs"]["zo-replay"][0]["bytes_by_kind"] != r["runs"]["zo-replay"][1]["bytes_by_kind"] or \
        r["runs"]["zo-replay"][0]["final_accuracy"] != r["runs"]["zo-replay"][1]["final_accuracy"]
    # a later invocation reuses the runs and evaluations of the earlier one
    before = (out / "runs" / "seed0" / "zo-replay" / "summary.json").stat().st_mtime_ns
    assert communication.main([*args, "--seeds", "0", "--skip-test"]) == 0
    assert (out / "runs" / "seed0" / "zo-replay" / "summary.json").stat().st_mtime_ns == before


def test_optimizer_table_cells_resume_and_report(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--model", "tiny-llama", "--task", "synthetic-sentiment", "--steps", "2",
            "--eval-examples", "8", "--threads", "1", "--optimizers", "zo-sgd", "fo-adam", "--pefts", "lora"]
    assert optimizer_peft.main(args) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["optimizer"], r["peft"]) for r in rows] == [("zo-sgd", "lora"), ("fo-adam", "lora")]
    assert all(r["peak_memory_bytes"] > 0 and r["seconds_per_step"] > 0 for r in rows)
    assert "| fo-adam | lora |" in (tmp_path / "table.md").read_text()


def test_scale_reports_rounds_and_server_time(tmp_path: Path) -> None:
    from analysis.experiments import scale

    fleet = scale.scaled_fleet("scenarios/large-fleet.yaml", 10)
    assert sum(d["count"] for d in fleet["devices"]) == 10
    out = tmp_path / "out"
    assert scale.main(["--out", str(out), "--clients", "10", "20", "--numel", "4096", "--k", "2"]) == 0
    r = json.loads((out / "results.json").read_text())
    for n in ("10", "20"):
        run = r["runs"][n]
        assert run["rounds"] == 5 and run["server_replay_seconds_per_round"] > 0
        assert run["server_peak_rss_bytes"] > 50e6
        assert r["server_at_model_size"][n]["aggregate_replay_seconds"] > 0


RESULTS = Path(__file__).resolve().parents[2] / "analysis" / "results"


PENDING: set[str] = set()  # experiments whose results are not committed yet


@pytest.mark.parametrize("name,module", [("equal_memory", equal_memory), ("optimizer_peft", optimizer_peft),
                                         ("communication", communication), ("scale", "scale"),
                                         ("quickstart", quickstart), ("byzantine/persistent", byzantine),
                                         ("byzantine/reply-bounds", byzantine),
                                         ("estimators", "estimators"), ("server_optimizers", "server_optimizers"),
                                         ("omp_wait", "omp_wait")])
def test_committed_tables_match_their_data(name: str, module: Any) -> None:
    """Each committed table.md is what its script makes of the committed results.json."""
    if isinstance(module, str):  # imported here, by name: these scripts load heavier modules
        module = importlib.import_module(f"analysis.experiments.{module}")
    path = RESULTS / name / "results.json"
    if name in PENDING and not path.exists():
        pytest.skip(f"{path}: no results committed yet")
    result = json.loads(path.read_text(encoding="utf-8"))
    assert (RESULTS / name / "table.md").read_text(encoding="utf-8") == module.format_table(result)


def test_estimators_compare_at_equal_forward_passes(tmp_path: Path) -> None:
    from analysis.experiments import estimators

    assert estimators.main(["--out", str(tmp_path), "--work", str(tmp_path / "runs"), "--task", "synthetic-sentiment", "--train-examples", "64",
                            "--eval-examples", "16", "--forwards", "15", "--seeds", "0"]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    # 7 central steps of 2, 3 fzoo steps of q + 1 = 5, 5 forward-gradient steps charged 3
    assert {(row["estimator"], row["steps"], row["forwards"]) for row in r["runs"]} == {
        ("central", 7, 14), ("fzoo", 3, 15), ("forward-grad", 5, 15)}
    assert set(r["summary"]) == {"central", "fzoo", "forward-grad"} and "**" in (tmp_path / "table.md").read_text()


def test_server_optimizers_experiment_runs_each_method(tmp_path: Path) -> None:
    from analysis.experiments import server_optimizers

    assert server_optimizers.main(["--out", str(tmp_path), "--work", str(tmp_path / "runs"), "--seeds", "0",
                                   "--smoke"]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in r["runs"]] == ["none", "momentum", "adam"]
    memory = {row["method"]: row["modelled_client_memory_bytes"] for row in r["runs"]}
    assert memory["none"] < memory["momentum"] < memory["adam"]  # the clients keep the server's buffers
    assert len({row["model_sha256"] for row in r["runs"]}) == 3
    assert (tmp_path / "table.md").read_text() == server_optimizers.format_table(r)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_allocator_compares_thresholds_in_fresh_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.experiments import allocator
    from fedzo.devices.validate import ValidationCase

    monkeypatch.setattr(allocator, "CASES", (ValidationCase("tiny-llama", "bp", 16, 256, optimizer="adam"),))
    monkeypatch.setenv(allocator.ENV, "123456")  # the caller's own setting comes back afterwards
    assert allocator.main(["--out", str(tmp_path), "--thresholds", "1048576", "--repeats", "1"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    default, fixed = result["rows"]
    assert (default["mmap_threshold"], fixed["mmap_threshold"]) == (None, 1048576)
    assert default["seconds_vs_default"] == 1.0 and fixed["seconds_vs_default"] > 0
    assert default["tensors_bytes"] == fixed["tensors_bytes"] > 10e6  # the allocator does not change the tensors
    assert all(g > 0 for r in result["rows"] for g in r["growth_bytes"])
    assert os.environ[allocator.ENV] == "123456"
    assert (tmp_path / "table.md").read_text() == allocator.format_table(result)


def test_precision_runs_each_dtype_per_seed_and_reuses_finished_runs(tmp_path: Path) -> None:
    from analysis.experiments import precision

    assert precision.main(["--out", str(tmp_path), "--seeds", "0", "1", "--rounds", "1", "--eval-examples", "64"]) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert [(r["dtype"], r["seed"]) for r in result["runs"]] == [("fp32", 0), ("bf16", 0), ("fp32", 1), ("bf16", 1)]
    rows = {r["dtype"]: r for r in result["rows"]}
    assert rows["fp32"]["stdev"] is not None and rows["bf16"]["seeds"] == [0, 1]
    # half the weight bytes: the memory model prices bf16 clients below fp32 ones
    assert rows["bf16"]["modelled_client_memory_bytes"] < rows["fp32"]["modelled_client_memory_bytes"]
    assert len({r["model_sha256"] for r in result["runs"]}) == 4
    assert all(r["interval"][0] <= r["final_accuracy"] <= r["interval"][1] for r in result["runs"])
    before = (tmp_path / "runs" / "bf16-seed1" / "metrics.jsonl").read_text()
    assert precision.main(["--out", str(tmp_path), "--seeds", "1", "--rounds", "1", "--eval-examples", "64"]) == 0  # reused, not rerun
    assert (tmp_path / "runs" / "bf16-seed1" / "metrics.jsonl").read_text() == before
    assert (tmp_path / "table.md").read_text() == precision.format_table(json.loads((tmp_path / "results.json").read_text()))


def test_zo_efficacy_spends_one_budget_per_cell_and_picks_the_best(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.experiments import zo_efficacy as z

    monkeypatch.setattr(z, "TUNINGS", ("prompt",))
    monkeypatch.setattr(z, "METHODS", {n: z.Method(m.label, m.zo, m.forwards, {"prompt": (1e-3,)}, m.server)
                                       for n, m in z.METHODS.items() if n in ("zo-sgd", "server-adam")})
    args = ["--out", str(tmp_path), "--model", "tiny-llama", "--task", "synthetic-sentiment-large", "--train-examples",
            "200", "--budget", "48", "--clients", "2", "--local-steps", "2", "--search-eval", "32", "--eval-examples",
            "32", "--seeds", "0", "--threads", "1", "--points", "1", "--calibration", "none"]
    assert z.main(["--phase", "seeds", *args]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert [(row["method"], row["rounds"], row["forwards"]) for row in r["search"]] == [
        ("zo-sgd", 6, 48), ("server-adam", 6, 48)]  # 48 forwards = 6 rounds x 2 clients x 2 steps x 2
    settings = sorted((row["method"], row["setting"]) for row in r["seeds"])
    assert settings == [("server-adam", "federated"), ("zo-sgd", "centralized"), ("zo-sgd", "federated")]
    central = yaml.safe_load((tmp_path / "runs" / "seeds" / "zo-sgd-prompt-s0-central.yaml").read_text())
    assert central["steps"] == 6 * 2 * 2 and "federation" not in central  # the fleet's steps, in one process
    assert r["best_method"].endswith("(prompt)") and 0 <= r["best_federated_test_accuracy"] <= 1
    assert all(row["curve"] and row["dev_interval"][0] <= row["dev_accuracy"] <= row["dev_interval"][1]
               and row["test_interval"][0] <= row["test_accuracy"] <= row["test_interval"][1] and row["test_n"] == 32
               for row in r["search"])
    seed0 = [row for row in r["seeds"] if row["setting"] == "federated" and row["method"] == "zo-sgd"]
    assert seed0[0]["test_accuracy"] == r["search"][0]["test_accuracy"]  # seed 0 federated is the search cell
    assert yaml.safe_load((tmp_path / "runs" / "search" / "zo-sgd-prompt-0.001.yaml").read_text())["data"][
        "eval_split"] == "dev"  # runs select on dev; the test split only reports
    before = (tmp_path / "runs" / "search" / "zo-sgd-prompt-0.001" / "summary.json").stat().st_mtime_ns
    assert z.main(["--phase", "search", *args]) == 0  # finished cells are reused
    assert (tmp_path / "runs" / "search" / "zo-sgd-prompt-0.001" / "summary.json").stat().st_mtime_ns == before
    assert (tmp_path / "table.md").read_text() == z.format_table(json.loads((tmp_path / "results.json").read_text()))
    # --phase report: the finished cells only (one without its test score is left out and not evaluated)
    (tmp_path / "runs" / "search" / "server-adam-prompt-0.001.test.json").unlink()
    assert z.main(["--phase", "report", *args]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in r["search"]] == ["zo-sgd"] and r["cells_finished"] == "1 of 2"
    assert sorted(row["setting"] for row in r["seeds"]) == ["centralized", "federated"]  # finished seed runs kept
    assert r["seeds_finished"] == "2 of 2" and r["best_method"] == "zo-sgd (prompt)"
    assert not (tmp_path / "runs" / "search" / "server-adam-prompt-0.001.test.json").exists()
    assert r["search"][0]["extrapolation"]["estimate"] is True and (tmp_path / "accuracy_vs_forwards.png").exists()
    assert "(estimate)" in (tmp_path / "table.md").read_text()
    # device time under a calibration: each finished cell repriced (exactly) and cached beside it
    from fedzo.cli import main as fedzo_main

    cal = tmp_path / "tiny.calibration.json"
    assert fedzo_main(["calibrate", "--model", "tiny-llama", "--method", "zo", "--peft", "prompt", "--rows", "2", "4",
                       "--widths", "8", "16", "--repeats", "1", "--threads", "1", "--out", str(cal)]) == 0
    assert z.main(["--phase", "report", *args[:-1], str(cal)]) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["search"]
    assert row["clock"] == f"calibrated ({cal}, repriced)" and row["sim_seconds"] != row["sim_seconds_as_run"]
    assert next(p["sim_seconds"] for p in row["curve"]) == 0.0 and row["curve"][-1]["sim_seconds"] == row["sim_seconds"]
    assert (tmp_path / "runs" / "search" / "zo-sgd-prompt-0.001.clock.json").exists()


def test_zo_efficacy_seeds_run_federated_first_and_name_no_best_until_complete(tmp_path: Path) -> None:
    from analysis.experiments import zo_efficacy as z

    rows = [{"method": n, "peft": "prompt", "lr": lr, "dev_accuracy": d}
            for n, lr, d in (("zo-sgd", 1e-2, 0.7), ("server-adam", 1e-3, 0.8), ("forward-grad", 1e-2, 0.75),
                             ("fzoo", 1e-2, 0.6))]
    a = argparse.Namespace(out=str(tmp_path), seeds=[0, 1])
    cells = [(name, seed, central) for name, _, _, seed, central, _ in z.seed_cells(a, rows)]
    assert cells == [("zo-sgd", 0, False), ("server-adam", 0, False), ("forward-grad", 0, False),
                     ("zo-sgd", 1, False), ("server-adam", 1, False), ("forward-grad", 1, False),
                     ("zo-sgd", 0, True), ("forward-grad", 0, True), ("zo-sgd", 1, True), ("forward-grad", 1, True)]
    assert z.seed_cells(a, rows)[0][-1] == tmp_path / "runs" / "search" / "zo-sgd-prompt-0.01"  # seed 0: the search cell
    done = [{"method": m, "peft": "prompt", "setting": "federated", "seed": seed, "test_accuracy": acc,
             "host_seconds": 600.0}
            for m, seed, acc in (("zo-sgd", 0, 0.70), ("zo-sgd", 1, 0.72), ("server-adam", 0, 0.80))]
    partial = z.summarize_seeds(done, 2)
    assert partial["best_method"] is None and partial["best_federated_test_accuracy"] is None
    assert "not named until" in z.format_table({"search": [], "summary": partial})
    full = z.summarize_seeds([*done, {**done[-1], "seed": 1, "test_accuracy": 0.78}], 2)
    assert full["best_method"] == "server-adam (prompt)" and full["best_federated_test_accuracy"] == pytest.approx(0.79)
    adam = next(t for t in full["table"] if t["method"] == "server-adam")
    assert adam["per_seed"] == {"0": 0.80, "1": 0.78} and adam["host_minutes"] == pytest.approx(10.0)
    # paired by seed: +0.10 and +0.06, so +0.08 ± 0.028, though the means differ by 0.08 ± a wider spread
    assert adam["paired_gain"]["mean"] == pytest.approx(0.08) and adam["paired_gain"]["seeds"] == 2
    assert adam["paired_gain"]["sd"] == pytest.approx(0.02828, abs=1e-5)
    assert next(t for t in full["table"] if t["method"] == "zo-sgd")["paired_gain"] is None  # the baseline itself
    table = z.format_table({"search": [], "summary": full})
    assert "| prompt | server-adam | federated | s0 0.800, s1 0.780 | 0.790 ± 0.014 | +0.080 ± 0.028 (n 2) | 10 |" in table


def test_every_zo_efficacy_cell_is_a_valid_scenario() -> None:
    """Each method x tuning x lr builds a scenario fedzo accepts, federated and centralized."""
    from analysis.experiments import zo_efficacy as z
    from fedzo.config.scenario import Scenario
    from fedzo.config.train import TrainConfig

    a = argparse.Namespace(
        model="smollm2-135m", task="rotten-tomatoes", train_examples=None, budget=800, clients=8, local_steps=5,
        batch_size=8, eps=1e-2, points=3, threads=2, search_eval=300, engine="batched")
    for name, m in z.METHODS.items():
        for peft in z.TUNINGS:
            for lr in m.lrs[peft]:
                sc = z.scenario(a, name, peft, lr, 0)
                Scenario.model_validate(sc)
                if not m.server:
                    fed = sc.pop("federation")
                    TrainConfig.model_validate({**sc, "steps": fed["rounds"] * 40})


def test_byzantine_runs_another_scenario_with_a_subset_of_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--scenario/--kinds/--defences: the attackers come from that fleet's size, only the chosen cells run."""
    ran: list[tuple[str, dict[str, Any]]] = []

    def fake_run(scenario: str, out: Path, *, overrides: dict[str, Any]) -> dict[str, Any]:
        ran.append((out.name, overrides))
        hurt = 0.1 if "faults" in overrides and not overrides["federation"].get("reputation") else 0.0
        return {"final_accuracy": 0.8 - hurt, "eval_n": 300, "initial_accuracy": 0.75, "model_sha256": out.name,
                "reputation": {str(c): (-2.0 if c == 4 else 1.0) for c in range(5)}
                if overrides["federation"].get("reputation") else None}

    monkeypatch.setattr(byzantine, "run_scenario", fake_run)
    scenario = Path(__file__).parents[2] / "scenarios" / "byzantine-smollm2.yaml"
    assert byzantine.main(["--scenario", str(scenario), "--kinds", "random", "--defences", "mean", "reputation",
                           "--seeds", "0", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "runs")]) == 0
    assert [name for name, _ in ran] == ["seed0-fault-free-mean", "seed0-fault-free-reputation",
                                         "seed0-random-mean", "seed0-random-reputation"]
    r = json.loads((tmp_path / "out" / "results.json").read_text())
    (attacker,) = r["per_seed"]["0"]["random/mean"]["attackers"]  # 20 % of the scenario's 5 clients
    assert 0 <= attacker < 5 and r["kinds"] == ["random"] and "--scenario" in r["command"]
    assert r["cells"]["random/mean"]["delta_vs_fault_free"]["mean"] == pytest.approx(-0.1)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "5 clients x 6 rounds, smollm2-135m; accuracy on 300 held-out examples" in table
    assert "| random |" in table and "sign_flip" not in table
    with pytest.raises(SystemExit):
        byzantine.main(["--defences", "median", "mean", "--seeds", "0", "--work", str(tmp_path / "runs")])


@pytest.mark.parametrize("in_process", [False, True])
def test_a_failed_fedzo_command_names_the_run_and_the_error_either_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_process: bool) -> None:
    from analysis.experiments import common

    monkeypatch.setattr(common, "IN_PROCESS", in_process)
    bad = _write(tmp_path / "bad.yaml", {**TINY_ZO, "federation": {**TINY_ZO["federation"], "rounds": -1}})
    with pytest.raises(RuntimeError) as err:
        common.run_fedzo(tmp_path / "run", "validate", str(bad))
    assert str(tmp_path / "run") in str(err.value) and "(exit 2)" in str(err.value)
    assert "rounds" in str(err.value) and str(bad) in str(err.value)
    assert "validate" in common.run_fedzo(tmp_path / "run", "validate", "--help")


def test_omp_wait_times_each_process_under_the_policy_it_was_given() -> None:
    from analysis.experiments import omp_wait

    twins = omp_wait.measure("inprocess", 3, 1, "PASSIVE", 2)
    assert [w["policy"] for w in twins] == ["PASSIVE", "PASSIVE"]
    assert all(len(w["round_seconds"]) == 1 and w["round_seconds"][0] > 0 for w in twins)
    (alone,) = omp_wait.measure("inprocess", 3, 1, None, 1)
    assert alone["policy"] is None
    rows = [{"engine": "inprocess", "participants": 3, "setting": "alone", "policy": p,
             "median_seconds_per_round": s} for p, s in (("default", 2.0), ("passive", 0.5))]
    assert omp_wait.format_table({"rows": rows}).splitlines()[-1] == "| inprocess | 3 | alone | 2.00 | 0.50 | 4.00x |"
