"""PEFT wrapping: the trainable set is marked by requires_grad; LoRA targets found by type."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedzo.errors import ConfigError
from fedzo.models import apply_peft, attention_linear_names, load_model, trainable_names


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_attention_linears_found_by_module_type(name):
    model = load_model(name).model
    names = attention_linear_names(model)
    modules = dict(model.named_modules())
    assert names and len(names) == 8  # 2 layers x (q, k, v, out)
    for n in names:
        assert isinstance(modules[n], nn.Linear)
        parents = [m for p, m in modules.items() if n.startswith(p + ".") and type(m).__name__.endswith("Attention")]
        assert parents
    mlp_linears = {n for n, m in modules.items() if isinstance(m, nn.Linear)} - set(names)
    assert mlp_linears  # the MLP (and head) linears are not targeted


def test_full_marks_every_parameter():
    model = apply_peft(load_model("tiny-llama").model, "full")
    assert len(trainable_names(model)) == len(list(model.named_parameters()))


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_lora_trains_only_adapters_and_starts_as_the_base_model(name):
    loaded = load_model(name)
    ids = loaded.tokenizer(["the movie was great"], return_tensors="pt")
    with torch.no_grad():
        before = loaded.model(**ids)[0]
    model = apply_peft(loaded.model, "lora", r=4)
    names = trainable_names(model)
    assert len(names) == 16 and all("lora_" in n for n in names)
    assert names == sorted(names)
    assert not model.training
    with torch.no_grad():
        assert torch.allclose(model(**ids)[0], before)


@pytest.mark.parametrize("mode", ["prefix", "prompt"])
def test_prefix_and_prompt_tuning_train_virtual_tokens_only(mode):
    model = apply_peft(load_model("tiny-llama").model, mode, num_virtual_tokens=5)
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trained) == 1 and trained[0][1].shape[0] == 5


def test_bad_mode_and_no_targets_are_config_errors():
    with pytest.raises(ConfigError, match="full, lora, prefix, prompt"):
        apply_peft(load_model("tiny-llama").model, "adapter")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="target_modules"):
        apply_peft(nn.Sequential(nn.Linear(2, 2)), "lora")


@pytest.mark.parametrize("mode", ["lora", "prefix", "prompt"])
def test_adapter_initialisation_is_seeded_and_leaves_the_global_generator_alone(mode):
    def adapters(seed: int) -> dict[str, torch.Tensor]:
        model = apply_peft(load_model("tiny-llama").model, mode, seed=seed)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    torch.manual_seed(123)
    a = adapters(0)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    b = adapters(0)
    assert torch.equal(torch.rand(1), after_first)  # caller's stream unchanged
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = adapters(1)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def _forward_backward(name: str, peft: str, checkpointing: bool) -> tuple[int, dict[str, torch.Tensor], torch.Tensor]:
    """Forward + backward on one batch: (how often the first layer's MLP ran, gradients, logits)."""
    from fedzo.models.adapters import enable_checkpointing

    loaded = load_model(name)
    model = apply_peft(loaded.model, peft, r=4)
    if checkpointing:
        enable_checkpointing(model)
    assert not model.training  # fedzo's models stay in eval mode
    mlp = next(m for n, m in model.named_modules() if n.endswith(("layers.0.mlp", "layer.0.intermediate")))
    calls = []
    mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # pre: recompute stops early
    ids = loaded.tokenizer(["the movie was great", "a dull film"], return_tensors="pt", padding=True)
    logits = model(**ids)[0]
    logits.float().pow(2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return len(calls), grads, logits.detach()


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("peft", ["full", "lora"])
def test_checkpointing_recomputes_layers_in_backward_with_the_same_gradients(name, peft):
    calls, grads, logits = _forward_backward(name, peft, checkpointing=False)
    ck_calls, ck_grads, ck_logits = _forward_backward(name, peft, checkpointing=True)
    assert calls == 1 and ck_calls == 2  # the layer ran again in backward
    assert torch.equal(logits, ck_logits)  # no dropout switched on by checkpointing
    assert grads.keys() == ck_grads.keys() and grads
    for n, g in grads.items():
        torch.testing.assert_close(ck_grads[n], g, msg=n)
