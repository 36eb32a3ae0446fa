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
