"""The engines check of the GPU script: scenarios moved to the device, skipped without its inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from fedzo.config.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_engines", ROOT / "scripts" / "device_engines.py")
assert spec is not None and spec.loader is not None
device_engines = importlib.util.module_from_spec(spec)
sys.modules["device_engines"] = device_engines
spec.loader.exec_module(device_engines)


def test_on_device_moves_a_scenario_and_keeps_the_rest(tmp_path: Path) -> None:
    out = Path(device_engines.on_device("scenarios/quickstart.yaml", tmp_path / "q.yaml", "cpu", "/models/x"))
    data = yaml.safe_load(out.read_text())
    original = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    assert data["runtime"] == {**original["runtime"], "device": "cpu"}
    assert data["model"] == {**original["model"], "name": "/models/x"}
    assert data["federation"] == original["federation"] and data["data"] == original["data"]
    tiny = device_engines.on_device("scenarios/batched-tiny.yaml", tmp_path / "t.yaml", "cpu")
    assert load_scenario(tiny).model.name == "tiny-llama"  # still a valid scenario, model kept


def test_engines_check_is_skipped_without_the_carried_tokenizer(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_engines, "CARRY", tmp_path / "empty")
    out = device_engines.engines_check("cpu", tmp_path / "work")
    assert "--prepare" in out["skipped"] and not (tmp_path / "work").exists()
    monkeypatch.setattr(device_engines, "missing", lambda: ["flwr"])
    assert "flwr" in device_engines.engines_check("cpu", tmp_path / "work")["skipped"]


def test_random_smollm2_needs_the_prepared_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_engines, "CARRY", tmp_path)
    with pytest.raises(FileNotFoundError, match="--prepare"):
        device_engines.random_smollm2(tmp_path / "model")


def test_fleet_keys_name_the_device_and_the_largest_participant_count() -> None:
    def row(case: str, n: int, batched: float, inprocess: float) -> dict:
        return {"case": case, "participants": n,
                "engines": {"inprocess": {"client_steps_per_host_second": inprocess},
                            "batched": {"client_steps_per_host_second": batched,
                                        "inprocess_over_engine": batched / inprocess}}}

    report = {"results": [row("tiny", 100, 50.0, 5.0), row("smollm2-bf16", 10, 30.0, 15.0),
                          row("smollm2-bf16", 100, 320.0, 16.0), row("smollm2-fp32", 100, 200.0, 14.0),
                          row("smollm2-full", 100, 44.0, 2.0)]}
    keys = device_engines.fleet_keys(report, "cuda:0")
    assert keys["client_steps_per_second_cuda_100"] == 320.0  # bf16 prompt tuning at 100, not at 10
    assert keys["client_steps_per_second_cuda_100_fp32"] == 200.0
    assert keys["client_steps_per_second_cuda_100_full"] == 44.0 and keys["batched_over_inprocess_cuda_100_full"] == 22.0
    assert keys["inprocess_client_steps_per_second_cuda_100"] == 16.0
    assert set(device_engines.fleet_keys(report, "cpu")) == {k.replace("cuda", "cpu") for k in keys}


def test_the_fleet_variants_are_valid_scenarios(tmp_path: Path) -> None:
    for variant, changes in device_engines.FLEET.items():
        sc = load_scenario(device_engines.on_device("scenarios/quickstart.yaml", tmp_path / f"{variant}.yaml", "cpu",
                                                    None, changes))
        assert (sc.data.batch_size, sc.data.max_length, sc.model.dtype) == (8, 64, "bf16" if variant == "bf16" else "fp32")
        assert sc.model.peft == ("full" if variant == "full" else "prompt")
        assert sc.federation.batched.half_precision == ("joint" if variant == "bf16" else "sequential")
        assert sc.federation.num_clients == 4  # the quickstart's federation otherwise (the bench sets participants)


@pytest.mark.skipif(device_engines.missing() != [], reason="needs Flower and pydantic")
def test_the_decomfl_shaped_run_times_rounds_through_fedzo_run(tmp_path: Path) -> None:
    out = device_engines.decomfl_check("cpu", tmp_path, rounds=4, seconds=300, scenario="scenarios/smoke-tiny.yaml",
                                       smollm2=False)
    assert out["rounds_measured"] == 4 and out["seconds_per_round"] > 0, out
    assert out["decomfl_2000_rounds_seconds"] == 2000 * out["seconds_per_round"]
    assert out["forward"] == "eager" and out["compiled_shapes"] is None
    sc = load_scenario(tmp_path / "decomfl-device.yaml")
    fed = sc.federation
    assert (fed.num_clients, fed.clients_per_round, fed.local_steps, fed.eval_every, sc.zo.q) == (8, 2, 1, 25, 5)
    assert (sc.data.batch_size, sc.data.max_length, sc.model.peft, sc.fleet) == (32, 64, "full", None)


@pytest.mark.slow  # a torch.compile of the tiny model: 45-120 s on 2 cores
@pytest.mark.skipif(device_engines.missing() != [], reason="needs Flower and pydantic")
def test_the_decomfl_shaped_run_under_a_compiled_forward_leaves_compilation_out(tmp_path: Path) -> None:
    """From round 1's record on: round 0's evaluation and round 1's training shape compiled
    before the measured rounds, which then compile nothing new."""
    out = device_engines.decomfl_check("cpu", tmp_path, rounds=3, seconds=300, scenario="scenarios/smoke-tiny.yaml",
                                       smollm2=False, forward="compiled", from_round=1)
    assert out["forward"] == "compiled" and out["rounds_measured"] == 3, out
    assert "rounds 2-4" in out["label"] and out["compiled_shapes"] >= 1
    assert load_scenario(tmp_path / "decomfl-device.yaml").runtime.forward == "compiled"


@pytest.mark.skipif(device_engines.missing() != [], reason="needs Flower and pydantic")
def test_the_full_rows_check_times_stacked_clients_against_in_process(tmp_path: Path) -> None:
    """Full weights, K = 2: the batched engine keeps each client's copy (stacked) and runs
    whole clients per pass; its keys name the device type, the participants and K."""
    out = device_engines.full_rows_check("cpu", tmp_path, participants=3, scenario="scenarios/smoke-tiny.yaml",
                                         smollm2=False)
    assert out["client_steps_per_second_cpu_3_full_k2"] > 0 and out["batched_over_inprocess_cpu_3_full_k2"] > 0, out
    assert out["inprocess_client_steps_per_second_cpu_3_full_k2"] > 0
    assert [n.split(",")[0] for n in out["batching"]] == ["rows: 3 clients"], out["batching"]
    assert all("whole clients with stacked weights" in n for n in out["batching"]), out["batching"]
    sc = load_scenario(tmp_path / "full-rows-device.yaml")
    assert (sc.model.peft, sc.model.dtype, sc.data.batch_size, sc.data.max_length) == ("full", "fp32", 8, 64)
