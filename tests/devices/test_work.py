"""The work model, checked by hand on a small architecture."""

from __future__ import annotations

import pytest

from fedzo.devices.dims import ArchDims
from fedzo.devices.work import Tuning, forward_flops, step_work

# 2 layers, hidden 8, MLP 16, 2 heads of 4 (2 KV heads), vocabulary 10: a llama-style decoder
D = ArchDims(kind="decoder", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=2, head_dim=4, vocab=10,
             tied=True, max_positions=64, type_vocab=0, num_labels=2, eager_attention=False)


def test_forward_flops_by_hand() -> None:
    # per token and layer: q,k,v,o 4 x 8 x 8 = 256 and gate, up, down 3 x 8 x 16 = 384 multiply-adds
    # attention: 4 x width x width x 8 per row; LM head 2 x 8 x 10 for the one scored position per row
    rows, width = 3, 5
    per_layer = 2 * rows * width * (256 + 384) + 4 * rows * width * width * 8
    assert forward_flops(D, rows, width) == pytest.approx(2 * per_layer + 2 * rows * 8 * 10)


def test_virtual_tokens_and_prefix_keys() -> None:
    assert forward_flops(D, 1, 5, extra_tokens=3) == forward_flops(D, 1, 8)  # prompt tokens pass every layer
    keys_only = forward_flops(D, 1, 5, extra_keys=3) - forward_flops(D, 1, 5)
    assert keys_only == pytest.approx(2 * 4 * 5 * 3 * 8)  # prefix keys are attended to, not computed


def test_step_work_of_zo_and_backprop() -> None:
    fwd = forward_flops(D, 4, 6)
    zo = step_work(D, [(4, 6)], Tuning("zo", forwards_per_step=2, regenerations_per_step=3), trainable=1000)
    assert zo.flops == pytest.approx(2 * fwd) and zo.regen_elements == 3000
    full = step_work(D, [(4, 6)], Tuning("bp", "full"), trainable=1000)
    assert full.flops == pytest.approx(3 * fwd + 2 * 1000)  # forward, input and weight gradients, SGD
    lora = step_work(D, [(4, 6)], Tuning("bp", "lora", lora_rank=0), trainable=10)
    assert lora.flops == pytest.approx(2 * fwd + 2 * 10)  # frozen weights: input gradients only
    ckpt = step_work(D, [(4, 6)], Tuning("bp", "full", checkpointing=True, optimizer="adam"), trainable=1000)
    assert ckpt.flops == pytest.approx(4 * fwd + 12 * 1000)  # the recomputed forward, Adam's update
    two = step_work(D, [(4, 6), (2, 9)], Tuning("zo"), trainable=1)
    assert two.flops == pytest.approx(2 * fwd + 2 * forward_flops(D, 2, 9))


def test_a_forward_gradient_step_prices_its_tangent() -> None:
    fwd = forward_flops(D, 4, 6)
    frozen = Tuning.of("fg", "prompt")  # the tangent runs every matmul once more
    assert frozen.calibration_method == "fg" and Tuning.of("zo").calibration_method == "zo"
    prompt = step_work(D, [(4, 6)], frozen, trainable=10)
    assert prompt.flops == pytest.approx(2 * forward_flops(D, 4, 6, extra_tokens=10)) and prompt.regen_elements == 20
    full = step_work(D, [(4, 6)], Tuning.of("fg", "full"), trainable=1000)
    assert full.flops == pytest.approx(3 * fwd)  # trained matmuls: dx W + x dW
