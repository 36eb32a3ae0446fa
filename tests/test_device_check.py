"""The prepared GPU check runs anywhere: a CPU smoke run on the tiny model writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_writes_one_json_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "device_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "device_check.py"), "--device", "cpu",
                           "--model", "tiny-llama", "--batch", "2", "--seq", "16", "--repeats", "1",
                           "--protocol-seconds", "2", "--out", str(out),
                           "--checks", "timing", "forward_gradient", "half_precision", "regeneration", "protocol_rounds",
                           "known_answers", "compiled_forward"], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["known_answers_ok"] and r["known_answers"] == {"eager": [], "compiled": []}
    t = r["timing"]
    assert t["two_forwards_seconds"] > 0 and t["zo_eager"]["ratio_to_two_forwards"] > 0
    assert t["bp_adam"]["predicted_tensor_bytes"] > t["zo_predicted_tensor_bytes"] > 0
    assert t["zo_eager"]["peak_allocated_bytes"] is None  # exact allocator peaks are CUDA-only
    half = r["half_precision"]  # on the CPU: bf16 only, five steps replayed bitwise
    assert set(half) == {"fp32_two_forwards_seconds", "bf16"} and r["half_precision_replay_ok"]
    assert half["bf16"]["replay_bitwise"] and len(half["bf16"]["grads"]) == 5
    fg = r["forward_gradient"]
    assert fg["ratio_to_two_forwards"] > 0 and fg["predicted_tensor_bytes"] > t["zo_predicted_tensor_bytes"]
    # the DeComFL-style run: both ways, the same scalars up to rounding (a float32 loss difference over
    # 2 eps: the joint pass's rounding shows magnified, as in the batched engine)
    proto = r["protocol_rounds"]
    assert proto["one_by_one"]["rounds"] >= 1 and proto["joint"]["rounds"] >= 1
    assert proto["one_by_one_over_joint"] > 0 and proto["scalars_max_relative_difference"] < 1e-2
    assert len(proto["joint"]["last_scalars"]) == 5
    regen = r["regeneration"]  # every mode and chunk timed; the chunking does not change the direction
    assert regen["chunkings_bitwise_equal"] and regen["elements"] > 0
    assert {k for k in regen if k.endswith(("_1048576", "_16777216"))} == {
        f"{m}_chunk_{c}" for m in ("eager", "compiled") for c in (1 << 20, 1 << 24)}
    assert all(regen[k]["seconds"] > 0 and regen[k]["peak_allocated_bytes"] is None for k in regen
               if k.startswith(("eager", "compiled")))
    # the compiled forward (graphs: compiled without CUDA graphs on a CPU): one shape, eager's loss to rounding
    cf = r["compiled_forward"]
    assert cf["modes"] == ["eager", "graphs"] and cf["graphs"]["shapes"] == [[2, 16]] and cf["eager"]["shapes"] == []
    assert cf["graphs"]["loss_abs_difference_to_first_mode"] < 1e-5
    assert all(cf[m]["step_seconds"] > 0 and cf[m]["two_forwards_seconds"] > 0 for m in cf["modes"])
    assert r["step_over_two_forwards_cpu_mode"] in cf["modes"]
    assert r["step_over_two_forwards_cpu"] == cf[r["step_over_two_forwards_cpu_mode"]]["ratio_to_two_forwards"]
    assert r["step_over_two_forwards_cpu_graphs"] == cf["graphs"]["ratio_to_two_forwards"]


def _device_check_module():  # the script, imported as a module (it is not in a package)
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summarize_fails_a_run_whose_batched_engine_fell_back() -> None:
    mod = _device_check_module()
    # the committed H200 run: every check ran, but the batched engine fell back on the device
    run = json.loads((ROOT / "analysis" / "results" / "device" / "device_check.json").read_text())
    assert mod.summarize(run, []) is False
    assert run["batched_engine_fell_back"] and "sequential" in run["batched_engine_fell_back"][0]
    assert run["known_answers_ok"] and run["half_precision_replay_ok"]
    assert run["batched_over_inprocess_smollm2_100"] == run["engines"]["batched_over_inprocess_smollm2_100"]
    # the same run, had the engine batched: it passes; a failed check or a differing answer does not
    for r in run["engines"]["results"]:
        r["batching"] = ["rows: 100 clients"]
    assert mod.summarize(run, []) is True and run["batched_engine_fell_back"] == []
    assert mod.summarize(dict(run), ["protocol_rounds"]) is False
    run["known_answers"]["compiled"] = ["chunk 3 differs"]
    assert mod.summarize(run, []) is False and not run["known_answers_ok"]


def test_summarize_lifts_issue_39s_headline_keys() -> None:
    mod = _device_check_module()
    result = {"device": "cuda", "known_answers": {"eager": [], "compiled": []},
              "fused_direction": {"gaussian_fraction_of_copy_bandwidth": 0.7, "bf16_gaussian_fraction_of_copy_bandwidth": 0.5},
              "timing": {"two_forwards_seconds": 0.02, "zo_eager": {"ratio_to_two_forwards": 1.3}},
              "decomfl": {"decomfl_2000_rounds_seconds": 280.0},
              "engines": {"results": [], "client_steps_per_second_cuda_100": 310.0,
                          "batched_over_inprocess_cuda_100_full": 21.0, "batched_over_inprocess_smollm2-fp32_100": 2.5},
              "full_rows": {"batched_over_inprocess_cuda_32_full_k2": 9.0, "client_steps_per_second_cuda_32_full_k2": 60.0,
                            "batching": ["rows: 32 clients"]}}
    assert mod.summarize(result, []) is True
    assert result["batched_over_inprocess_cuda_32_full_k2"] == 9.0 and result["client_steps_per_second_cuda_32_full_k2"] == 60.0
    assert result["regeneration_fraction_of_copy_bandwidth_cuda"] == {"fp32": 0.7, "bf16": 0.5}
    assert (result["step_over_two_forwards_cuda"], result["two_forwards_seconds_cuda"]) == (1.3, 0.02)
    assert result["client_steps_per_second_cuda_100"] == 310.0 and result["batched_over_inprocess_cuda_100_full"] == 21.0
    assert result["decomfl_2000_rounds_seconds"] == 280.0 and result["batched_over_inprocess_smollm2_100"] == 2.5
    assert result["step_over_two_forwards_cuda_mode"] == "eager"  # no compiled_forward check: the timing's eager step
    assert result["decomfl_forward"] is None  # the eager run names no mode in this stub
    # a DeComFL-shaped run under CUDA graphs that is faster heads; a failed one does not
    result["decomfl_graphs"] = {"decomfl_2000_rounds_seconds": 120.0, "forward": "graphs"}
    assert mod.summarize(result, []) is True
    assert (result["decomfl_2000_rounds_seconds"], result["decomfl_forward"]) == (120.0, "graphs")
    result["decomfl_graphs"] = {"error": "fewer than 2 rounds"}
    assert mod.summarize(result, []) is True and result["decomfl_2000_rounds_seconds"] == 280.0
    # with the compiled_forward check: the mode with the fastest forwards heads, every mode keyed
    result["compiled_forward"] = {"modes": ["eager", "graphs"],
                                  "eager": {"two_forwards_seconds": 0.06, "ratio_to_two_forwards": 1.1},
                                  "graphs": {"two_forwards_seconds": 0.012, "ratio_to_two_forwards": 1.4}}
    assert mod.summarize(result, []) is True
    assert (result["step_over_two_forwards_cuda"], result["two_forwards_seconds_cuda"]) == (1.4, 0.012)
    assert result["step_over_two_forwards_cuda_mode"] == "graphs"
    assert (result["step_over_two_forwards_cuda_eager"], result["two_forwards_seconds_cuda_graphs"]) == (1.1, 0.012)


def test_a_half_precision_case_run_one_client_at_a_time_is_recorded_not_failed() -> None:
    mod = _device_check_module()
    result = {"device": "cuda", "known_answers": {"eager": [], "compiled": []}, "engines": {"results": [
        {"batching": ["sequential: model.dtype bf16: a joint forward would not reproduce each client's scalars"]},
        {"batching": ["rows: 100 clients, 8 joint turns"]}]}}
    assert mod.summarize(result, []) is True and len(result["batched_engine_fell_back"]) == 1
    result["engines"]["results"][1]["batching"] = ["sequential: participants start from different rounds or seeds"]
    assert mod.summarize(result, []) is False
