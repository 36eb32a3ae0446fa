"""Memory model: parameter counts, hand-checked components, orderings, measured peaks."""

from __future__ import annotations

import sys

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

from fedzo.devices.architectures import FAMILIES, MODEL_CONFIGS, model_config
from fedzo.devices.dims import arch_dims
from fedzo.devices.memory import (
    count_parameters,
    estimate_memory,
    trainable_parameters,
)
from fedzo.errors import ConfigError


def _actual_params(config: object) -> int:
    with torch.device("meta"):
        cls = LlamaForCausalLM if isinstance(config, LlamaConfig) else BertForSequenceClassification
        model = cls(config)  # type: ignore[arg-type]
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["tiny-llama", "smollm2-135m", "smollm2-1.7b", "minilm-l6"])
def test_parameter_count_matches_transformers(name: str) -> None:
    config = model_config(name)
    assert count_parameters(arch_dims(config)) == _actual_params(config)


def test_parameter_count_untied_and_gqa() -> None:
    config = LlamaConfig(vocab_size=300, hidden_size=96, intermediate_size=200,
                         num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
                         tie_word_embeddings=False)
    assert count_parameters(arch_dims(config)) == _actual_params(config)
    bert = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, num_labels=3)
    assert count_parameters(arch_dims(bert)) == _actual_params(bert)


def test_smollm2_135m_is_134_5m() -> None:
    assert count_parameters(arch_dims(model_config("smollm2-135m"))) == 134_515_008


def test_zo_breakdown_by_hand() -> None:
    # tiny-llama: h=64, I=128, 2 layers, vocab 1000, 138,048 params (fp32 -> 552,192 B).
    b = estimate_memory(model_config("tiny-llama"), "zo", batch=2, seq=10, runtime_overhead=0,
                        allocator_slack=0.0, allocator_reserve=0, chunk_elements=1000)
    assert b.weights == 138_048 * 4
    assert b.activations == (5 * 64 + 3 * 128) * 20 * 4  # one layer's working set, 20 tokens
    assert b.logits == 2 * 1000 * (4 + 4)  # last position: logits + fp32 log-softmax
    assert b.perturbation_chunk == 1000 * 4
    assert (b.gradients, b.optimizer_states) == (0, 0)
    assert b.total == b.weights + b.activations + b.logits + b.perturbation_chunk


def test_bp_needs_more_than_zo_and_orderings() -> None:
    cfg = model_config("smollm2-135m")

    def total(mode: str, **kw: object) -> int:
        return estimate_memory(cfg, mode, batch=8, seq=128, **kw).total  # type: ignore[arg-type]

    assert total("zo") < total("bp", optimizer="sgd") < total("bp", optimizer="adam")
    assert total("bp", peft="lora", optimizer="adam") < total("bp", optimizer="adam")
    assert total("bp", checkpoint_fraction=1.0) < total("bp", checkpoint_fraction=0.0)
    assert total("zo", logits="last") < total("zo", logits="full")
    assert total("zo", dtype="bf16") < total("zo")
    b8 = estimate_memory(cfg, "bp", batch=8, seq=128, optimizer="adam")
    assert b8.total <= b8.additive_total
    assert b8.optimizer_states == 2 * b8.gradients


def test_peft_trainable_counts() -> None:
    d = arch_dims(model_config("smollm2-135m"))
    n, largest = trainable_parameters(d, "lora", lora_rank=8)
    assert n == 30 * (8 * (576 + 576) + 8 * (576 + 192))  # q_proj and v_proj adapters
    assert largest == 8 * 576
    n, _ = trainable_parameters(d, "prefix", prefix_tokens=10)
    assert n == 30 * 2 * 10 * 192


def test_bad_arguments_name_the_option() -> None:
    cfg = model_config("tiny-llama")
    with pytest.raises(ConfigError, match="dtype: 'fp8'"):
        estimate_memory(cfg, "zo", batch=1, seq=1, dtype="fp8")
    with pytest.raises(ConfigError, match="known:.*smollm2-135m"):
        model_config("gpt-5")


def test_families_are_ordered_by_size() -> None:
    for members in FAMILIES.values():
        sizes = [count_parameters(arch_dims(MODEL_CONFIGS[m]())) for m in members]
        assert sizes == sorted(sizes)


# Measured against the model on tiny llama configs in fresh subprocesses (~8 s each on an
# idle 2-core machine). Tiny weights make the runtime (~350 MB of torch + transformers)
# dominate the process peak, so the check is on the model-attributable bytes (VmHWM - RSS
# after imports), with shapes chosen so activations are 80-150 MB. Tolerance 40 %: the same
# tiny ZO case measured 145-194 MB across runs on 2-core machines (glibc per-thread arenas),
# predicted 145 MB, so 25 % failed now and then on a fresh CI checkout; a model off by 2x
# still fails. The 15 % target is checked on realistic sizes by `fedzo memory --validate`.
# The process-level check (runtime included) uses 15 %. Half precision gets 50 %: its CPU
# kernels allocate float32 temporaries that grow glibc's heap by 0.6-1.0x the transient bytes
# (the slack is fitted for fp32), so bf16 32 x 128 measured -24 to -26 % on an idle host over
# three shapes and -40.05 % once on CI; its live tensors still hold to 10 %.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "mode,batch,seq,optimizer,dtype",
    [("zo", 64, 512, "sgd", "fp32"), ("bp", 32, 128, "adam", "fp32"), ("zo", 64, 256, "forward-grad", "fp32"),
     ("bp", 32, 128, "adam", "bf16")],  # bf16: the RMSNorms save float32 copies (tensors 24.2 / 26.7 MB)
)
def test_prediction_matches_measured_peak(mode: str, batch: int, seq: int, optimizer: str, dtype: str) -> None:
    from fedzo.devices.validate import ValidationCase, run_case

    fg = optimizer == "forward-grad"  # ZO by forward gradients: tangents and unfused attention
    r = run_case(ValidationCase("tiny-llama", mode, batch, seq, optimizer="sgd" if fg else optimizer,  # type: ignore[arg-type]
                                forward_grad=fg, dtype=dtype))  # type: ignore[arg-type]
    assert abs(r.error) <= (0.50 if dtype != "fp32" else 0.40), (r.predicted, r.measured)
    assert abs(r.process_predicted - r.process_measured) <= 0.15 * r.process_measured
    # the step's live tensors, free of the allocator's noise, are held to 10 %
    assert r.tensors_measured and abs(r.tensors_predicted - r.tensors_measured) <= 0.10 * r.tensors_measured, \
        (r.tensors_predicted, r.tensors_measured)


# glibc raises its mmap threshold as large blocks are freed, so later activations come from
# the heap and freed ones stay resident: the process peak with and without checkpointing
# depends on the host's allocator (0.84, 0.74 and, with MALLOC_MMAP_THRESHOLD_=65536, 0.65
# of the plain peak at 32 x 512 on three runs). The live tensors are exact: 99.2 of 171 MB
# measured, 99.2 of 168 MB predicted. Realistic sizes are checked by `fedzo memory --validate`.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_checkpointing_saving_matches_the_model() -> None:
    """Checked on the step's live tensors, which do not depend on the C allocator: its resident
    set moved the measured ratio from 0.65 on one host to 0.74 on another (same code)."""
    from fedzo.devices.validate import ValidationCase, run_case

    plain, ckpt = (run_case(ValidationCase("tiny-llama", "bp", 32, 512, optimizer="adam", checkpointing=c))
                   for c in (False, True))
    assert plain.tensors_measured and ckpt.tensors_measured
    predicted, measured = ckpt.tensors_predicted / plain.tensors_predicted, ckpt.tensors_measured / plain.tensors_measured
    assert measured < 0.7, (ckpt.tensors_measured, plain.tensors_measured)  # the layers really are recomputed
    assert abs(measured - predicted) <= 0.03, (predicted, measured)
    for r in (plain, ckpt):
        assert abs(r.tensors_error or 1.0) <= 0.05, (r.case.label, r.tensors_predicted, r.tensors_measured)


def test_a_magnitude_mask_costs_one_bit_per_trainable_parameter() -> None:
    cfg = model_config("smollm2-135m")
    plain = estimate_memory(cfg, "zo", batch=8, seq=64)
    bits = estimate_memory(cfg, "zo", batch=8, seq=64, mask="magnitude")
    seeded = estimate_memory(cfg, "zo", batch=8, seq=64, mask="random")
    assert bits.optimizer_states == -(-134_515_008 // 8) and bits.total - plain.total == bits.optimizer_states
    assert seeded.total == plain.total  # a seeded mask is regenerated, never held


def test_zo_optimizer_state_is_counted() -> None:
    cfg = model_config("minilm-l6")
    sgd, mmt, adam = (estimate_memory(cfg, "zo", batch=8, seq=64, optimizer=o) for o in ("sgd", "momentum", "adam"))
    buffer = mmt.optimizer_states
    assert sgd.optimizer_states == 0 and buffer > 80e6  # 22.7M fp32 parameters, one buffer
    assert adam.optimizer_states == 2 * buffer and adam.optimizer_temporaries > 0
    assert adam.total > mmt.total > sgd.total


# Measured on MiniLM-L6 (batch 8 x 64, fresh processes, 2026-12-01): ZO-SGD predicted 140.5 MB, measured
# 155.6 MB; ZO-Adam predicted 327.5 MB, measured 337.6 MB: the two buffers add 187 MB predicted, 182 MB
# measured. The tiny model's buffers (0.5 MB) are below what peak RSS resolves, hence a real model here.
@pytest.mark.integration
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_zo_adam_state_matches_a_measured_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedzo.devices.validate import ValidationCase, run_case

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    sgd, adam = (run_case(ValidationCase("minilm-l6", "zo", 8, 64, optimizer=o)) for o in ("sgd", "adam"))
    predicted, measured = adam.predicted - sgd.predicted, adam.measured - sgd.measured
    assert abs(measured - predicted) <= 0.1 * predicted, (predicted, measured)


def test_forward_gradients_hold_tangents_and_the_direction() -> None:
    cfg = model_config("smollm2-135m")
    plain = estimate_memory(cfg, "zo", batch=8, seq=64, peft="prefix")
    fg = estimate_memory(cfg, "zo", batch=8, seq=64, peft="prefix", forward_grad=True)
    assert fg.activations == 2 * plain.activations and fg.logits == 2 * plain.logits
    assert fg.peak_phase == "forward+tangent" and fg.weights == plain.weights
    full = estimate_memory(cfg, "zo", batch=8, seq=64, forward_grad=True)
    direction = count_parameters(arch_dims(cfg)) * 4  # a dense fp32 copy of every weight
    assert full.optimizer_temporaries >= direction and full.total - direction > plain.total


def test_fedzo_memory_prices_forward_gradients(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fedzo.cli import main

    args = ["memory", "--model", "smollm2-135m", "--batch", "8", "--seq", "64", "--peft", "prefix", "--json"]
    assert main(args) == 0
    central = json.loads(capsys.readouterr().out)
    assert main([*args, "--zo-estimator", "forward-grad"]) == 0
    fg = json.loads(capsys.readouterr().out)
    assert fg["zo_estimator"] == "forward-grad" and fg["zo"]["peak_phase"] == "forward+tangent"
    assert fg["zo"]["total"] > central["zo"]["total"] and fg["bp"] == central["bp"]


def test_a_frozen_base_saves_fewer_activations() -> None:
    """Frozen weights need no saved inputs: under LoRA a SmolLM2 layer keeps 3h + 3q + 2kv + 3I
    elements per token (8448), under prefix/prompt 2h + 2q + 2kv + 3I (7296), against 11904
    when every weight trains (the tensor tracker measured LoRA at 0.67 of the full count)."""
    from fedzo.devices.memory import layer_saved_elements

    d = arch_dims(model_config("smollm2-135m"))
    full, lora, prefix = (layer_saved_elements(d, 64, training=True, peft=p) for p in ("full", "lora", "prefix"))
    assert (full, lora, prefix) == (11904, 8448, 7296)
    bp = {p: estimate_memory(model_config("smollm2-135m"), "bp", batch=8, seq=64, peft=p, optimizer="adam",
                             logits="last").activations for p in ("full", "lora")}
    assert bp["lora"] < 0.75 * bp["full"]
    assert layer_saved_elements(d, 64, training=False, peft="lora") == layer_saved_elements(d, 64, training=False)


def test_validation_compares_the_median_of_fresh_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """repeats: every process is measured, the median compared, the spread reported; the live
    tensors come from the first process only."""
    from fedzo.devices import validate as v
    from fedzo.errors import FedzoError

    growth = iter([300, 260, 410])
    calls: list[bool] = []

    def fake(case: v.ValidationCase, timeout: float = 300.0, *, tensors: bool = True) -> dict[str, object]:
        calls.append(tensors)
        return {"rss_import": 1000, "hwm": 1000 + next(growth), "seconds": 1.0, "tensors": 7 if tensors else None}

    monkeypatch.setattr(v, "measure", fake)
    r = v.run_case(v.ValidationCase("tiny-llama", "zo", 4, 16), repeats=3)
    assert calls == [True, False, False] and r.measured_runs == (300, 260, 410)
    assert r.measured == 300 and r.process_measured == 1300 and r.tensors_measured == 7
    assert r.spread == pytest.approx(150 / 300)
    assert "50 % of 3" in v.format_table([r]) and v.results_json([r])[0]["spread"] == pytest.approx(0.5)
    with pytest.raises(FedzoError, match="repeats"):
        v.run_case(v.ValidationCase("tiny-llama", "zo", 4, 16), repeats=0)
