"""Loading models by name: tiny models, local directories, errors, embedded assets."""

from __future__ import annotations

import time

import pytest
import torch

from fedzo.errors import AssetError, ConfigError
from fedzo.models import load_model


@pytest.mark.parametrize(("name", "kind"), [("tiny-llama", "causal-lm"), ("tiny-bert", "encoder")])
def test_tiny_models_build_fast_and_identically(name, kind):
    load_model(name)  # warm imports
    t0 = time.perf_counter()
    a = load_model(name)
    assert time.perf_counter() - t0 < 1.0
    b = load_model(name)
    assert a.kind == kind and a.name == name and not a.model.training
    assert a.n_params == sum(p.numel() for p in a.model.parameters()) < 200_000
    for (na, pa), (nb, pb) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert a.tokenizer.pad_token_id is not None and a.tokenizer.eos_token_id is not None


def test_tiny_model_leaves_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("tiny-llama")
    assert torch.equal(torch.rand(3), expected)


def test_dtype_is_applied():
    assert next(load_model("tiny-llama", dtype=torch.bfloat16).model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_local_directory_round_trip(name, tmp_path):
    orig = load_model(name)
    orig.model.save_pretrained(tmp_path / "m")
    orig.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.kind == orig.kind and loaded.name == str(tmp_path / "m")
    ids = orig.tokenizer(["the movie was great", "bad"], padding=True, return_tensors="pt")
    assert loaded.tokenizer(["the movie was great"])["input_ids"] == orig.tokenizer(["the movie was great"])["input_ids"]
    with torch.no_grad():
        out_a, out_b = orig.model(**ids), loaded.model(**ids)
    key = "logits" if orig.kind == "causal-lm" else "last_hidden_state"
    assert torch.allclose(out_a[key], out_b[key], atol=1e-6)


def test_unknown_model_names_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="tiny-llama"):
        load_model(str(tmp_path / "no-such-model"))


def test_embedded_model_offline_names_the_fetch_command():
    with pytest.raises(AssetError, match="fedzo assets fetch minilm-l6"):
        load_model("minilm-l6")


@pytest.mark.integration
def test_real_smollm2_loads_from_the_fp32_cache(monkeypatch):
    monkeypatch.undo()
    load_model("smollm2-135m")  # builds the cache on first use
    t0 = time.perf_counter()
    lm = load_model("smollm2-135m")
    assert time.perf_counter() - t0 < 5
    assert lm.kind == "causal-lm" and lm.n_params == 134_515_008
    for word in (" terrible", " great", " negative", " positive", "negative", "positive"):
        assert len(lm.tokenizer(word, add_special_tokens=False)["input_ids"]) == 1


@pytest.mark.integration
def test_real_minilm_is_an_encoder(monkeypatch):
    monkeypatch.undo()
    lm = load_model("minilm-l6")
    assert lm.kind == "encoder" and 22_000_000 < lm.n_params < 23_000_000
