"""A run directory alone rebuilds the run's global model; `fedzo run` shows progress and plots."""

from __future__ import annotations

import json

import pytest
import yaml

from fedzo.archives import pack
from fedzo.cli import main
from fedzo.errors import ConfigError
from fedzo.federation.run import run_federated
from fedzo.federation.server.global_model import load_global_model


@pytest.mark.parametrize("catch_up", ["replay", "seed_pool"])
def test_rebuilt_global_model_matches_the_server(tmp_path, fed_config, catch_up) -> None:
    out = tmp_path / catch_up
    summary = run_federated(fed_config(catch_up=catch_up), out)
    gm = load_global_model(out)
    assert gm.rounds == 3
    assert gm.model_sha256 == summary.model_sha256 and gm.matches_summary is True


def test_a_prefix_of_the_log_rebuilds_the_model_of_a_shorter_run(tmp_path, fed_config, capsys) -> None:
    """`fedzo evaluate --run DIR --round R`: the model after R rounds is the one a run of R rounds ends with."""
    long_run, short_run = tmp_path / "long", tmp_path / "short"
    run_federated(fed_config(), long_run)
    short = run_federated(fed_config(rounds=2), short_run)
    gm = load_global_model(long_run, 2)
    assert gm.rounds == 2 and gm.model_sha256 == short.model_sha256
    assert gm.matches_summary is None  # the summary names the last round's model, not this one
    assert load_global_model(long_run, 0).model_sha256 != short.model_sha256
    assert main(["evaluate", "--run", str(long_run), "--round", "2", "--limit", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["model_sha256"] == short.model_sha256
    assert main(["evaluate", "--run", str(long_run), "--round", "7"]) == 2
    err = capsys.readouterr().err
    assert "--round 7: " in err and "has rounds 0..3 in its update log" in err
    assert main(["evaluate", "--round", "2"]) == 2
    assert "--round 2 needs --run DIR" in capsys.readouterr().err


def test_evaluate_run_cli_and_errors(tmp_path, fed_config, capsys) -> None:
    out = tmp_path / "r"
    run_federated(fed_config(), out)
    assert main(["evaluate", "--run", str(out), "--split", "test", "--limit", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["matches_summary"] is True and res["n"] == 16 and 0.0 <= res["accuracy"] <= 1.0
    assert main(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    log = out / "update_log.jsonl"
    lines = log.read_text().splitlines()  # header, rounds 1-3
    log.write_text("\n".join([*lines[:3], lines[3][: len(lines[3]) // 2]]))  # round 3 torn by a kill
    assert main(["evaluate", "--run", str(out), "--limit", "4", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out.splitlines()[-1])["rounds"] == 2
    assert "update_log.jsonl:4: the last line is torn" in cap.err and "used the 2 rounds before it" in cap.err
    log.write_text("\n".join([lines[0], lines[1], "{not json", lines[3]]) + "\n")  # round 2 corrupted
    assert main(["evaluate", "--run", str(out), "--limit", "4"]) == 2
    err = capsys.readouterr().err
    assert "update_log.jsonl:3: this line of the update log is corrupted" in err and "up to round 1" in err


def test_fedavg_runs_rebuild_from_their_kept_weights(tmp_path, fed_config) -> None:
    out = tmp_path / "fedavg"
    summary = run_federated(fed_config(optimizer="fo-sgd", rounds=2), out)
    gm = load_global_model(out)
    assert gm.rounds == 2 and gm.matches_summary is True
    sc = gm.scenario
    final = gm.objective.classifier.evaluate(gm.objective.eval, sc.data.eval_batch_size)
    assert final["accuracy"] == summary.final_accuracy  # the model the server evaluated last
    weights = out / "state" / "fedavg_global.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConfigError, match="unreadable global weights"):
        load_global_model(out)
    weights.unlink()
    with pytest.raises(ConfigError, match="never finished a round"):
        load_global_model(out)


def test_progress_bar_plots_and_label_histograms(tmp_path, fed_config, capsys, monkeypatch) -> None:
    import sys

    out = tmp_path / "p"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar (a file gets lines)
    run_federated(fed_config(partition="dirichlet", partition_alpha=0.1), out, progress="bar", plots=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "acc " in err and "up " in err
    run_federated(fed_config(rounds=2), tmp_path / "lines", progress="lines")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("round 0/2: accuracy ") and " [" in lines[0] and "(n 32)" in lines[0]
    assert lines[-1].startswith("round 2/2: accuracy ") and "up " in lines[-1] and "simulated " in lines[-1]
    assert list((out / "plots").glob("*.png"))
    fleet = next(json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "fleet")
    hist = fleet["label_histograms"]
    assert len(hist) == 4 and sum(map(sum, hist)) == 128
    assert any(min(row) < 0.25 * max(row) for row in hist)  # alpha 0.1: skewed clients


def test_run_where_no_client_trained_says_so_and_exits_3(tmp_path, fed_config, capsys) -> None:
    cfg = fed_config(rounds=2).model_dump(mode="json")
    cfg["fleet"] = {"default_profile": "rpi5-8gb", "deadline_seconds": 1e-3}  # every client late
    path = tmp_path / "idle.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "idle"), "--no-progress", "--no-plots"]) == 3
    cap = capsys.readouterr()
    first = cap.out.splitlines()[0]
    assert "fleet: 4 clients: 4 rpi5-8gb" in first
    assert "round 1/2: no client trained (0 of 2 sampled clients trained (2 late); min_clients is 1" in cap.out
    assert "no client trained in any of the 2 rounds" in cap.err
    rounds = [json.loads(x) for x in (tmp_path / "idle" / "metrics.jsonl").read_text().splitlines()]
    assert [r["participants"] for r in rounds if r["kind"] == "round"] == [0, 0, 0]
    assert json.loads((tmp_path / "idle" / "summary.json").read_text())["rounds_trained"] == 0
    cfg["federation"]["allow_no_training"] = True
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--out", str(tmp_path / "allowed"), "--no-progress", "--no-plots"]) == 0
    capsys.readouterr()
    host = fed_config(rounds=1).model_dump(mode="json")
    path.write_text(yaml.safe_dump({k: v for k, v in host.items() if k != "fleet"}))
    assert main(["run", str(path), "--out", str(tmp_path / "host"), "--no-progress", "--no-plots"]) == 0
    assert "fleet: none given, so 4 clients on the host stand-in" in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize("mask", ["random", "magnitude"])
def test_sparse_masks_run_federated_and_every_party_builds_the_same_mask(tmp_path, fed_config, mask) -> None:
    from fedzo.zo import ParamSet

    base = fed_config(catch_up="replay")
    cfg = base.model_copy(update={"zo": base.zo.model_copy(update={"mask": mask, "mask_density": 0.25,
                                                                   "chunk_size": 1024})})
    out = tmp_path / mask
    summary = run_federated(cfg, out)
    gm = load_global_model(out)  # a third party: builds the mask from the initial weights, as server and clients
    assert gm.model_sha256 == summary.model_sha256 and gm.matches_summary is True
    # only the masked elements ever moved: about a quarter of each tensor
    from fedzo.tasks.objective import build_objective

    initial = ParamSet.from_module(build_objective(cfg.model, cfg.data, cfg.runtime, cfg.seed).classifier).snapshot()
    final = ParamSet.from_module(gm.objective.classifier).snapshot()
    moved = sum(int((final[n] != initial[n]).sum()) for n in initial)
    total = sum(t.numel() for t in initial.values())
    assert 0.18 < moved / total <= 0.26, moved / total
    if mask == "magnitude":  # the smallest quarter of each tensor's initial weights, and only those
        for n, t in initial.items():
            changed = final[n] != t
            flat = t.abs().reshape(-1).float()
            threshold = flat.kthvalue(max(1, round(0.25 * flat.numel()))).values
            assert not changed.any() or t[changed].abs().max() <= threshold, n


def test_a_run_packed_into_its_experiments_archive_still_rebuilds_and_evaluates(tmp_path, fed_config, monkeypatch,
                                                                                 capsys) -> None:
    monkeypatch.setenv("FEDZO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "exp" / "runs" / "seed0" / "zo"
    summary = run_federated(fed_config(), out)
    pack(tmp_path / "exp" / "runs")
    assert not out.exists()
    gm = load_global_model(out)
    assert gm.model_sha256 == summary.model_sha256 and gm.matches_summary is True
    assert main(["evaluate", "--run", str(out), "--limit", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["model_sha256"] == summary.model_sha256
    assert main(["run", "--resume", str(out)]) == 2
    assert "python -m fedzo.archives unpack" in capsys.readouterr().err
