"""Loading a model and its tokenizer by name: embedded asset, tiny model, local dir or hub id."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fedzo import assets
from fedzo.errors import AssetError, ConfigError
from fedzo.models.tiny import build_tiny_bert, build_tiny_llama

__all__ = ["EMBEDDED_MODELS", "LoadedModel", "ModelKind", "fp32_cache_dir", "load_model", "model_kind",
           "smollm2_cached"]

log = logging.getLogger(__name__)

ModelKind = Literal["causal-lm", "encoder"]

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FP32_CACHE_TAG = "hf-fp32"


@dataclass
class LoadedModel:
    """A model in eval mode with its tokenizer; ``kind`` says how to build a classifier."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    kind: ModelKind
    name: str
    n_params: int


def _smollm2(dtype: torch.dtype, cache_dir: str | os.PathLike[str] | None) -> LoadedModel:
    model, tok = load_smollm2(cache_dir=cache_dir, dtype=dtype)
    return _wrap(model, tok, "causal-lm", "smollm2-135m")


def _minilm(dtype: torch.dtype, cache_dir: str | os.PathLike[str] | None) -> LoadedModel:
    from transformers.utils import logging as hf_logging

    folder = assets.ensure("minilm-l6", cache_dir=cache_dir)
    # the checkpoint's pooler weights are left out on purpose (fedzo pools the hidden states
    # itself); transformers would report them as unexpected keys on every load
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModel.from_pretrained(folder, dtype=dtype, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(level)
    tok = AutoTokenizer.from_pretrained(folder)
    return _wrap(model, tok, "encoder", "minilm-l6")


def _to_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model.to(dtype)`` (the model's own override runs; typed as ``nn.Module.to`` because
    transformers declares its override through ``functools.wraps``, which drops ``self``)."""
    return model.to(dtype)


def _tiny_llama(dtype: torch.dtype, cache_dir: str | os.PathLike[str] | None) -> LoadedModel:
    model, tok = build_tiny_llama()
    return _wrap(_to_dtype(model, dtype), tok, "causal-lm", "tiny-llama")


def _tiny_bert(dtype: torch.dtype, cache_dir: str | os.PathLike[str] | None) -> LoadedModel:
    model, tok = build_tiny_bert()
    return _wrap(_to_dtype(model, dtype), tok, "encoder", "tiny-bert")


EMBEDDED_MODELS: dict[
    str, Callable[[torch.dtype, str | os.PathLike[str] | None], LoadedModel]
] = {
    "smollm2-135m": _smollm2,
    "minilm-l6": _minilm,
    "tiny-llama": _tiny_llama,
    "tiny-bert": _tiny_bert,
}
"""Models available without hub access, by name (the first is the default)."""


def _wrap(
    model: nn.Module, tok: PreTrainedTokenizerBase, kind: ModelKind, name: str
) -> LoadedModel:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    return LoadedModel(model=model, tokenizer=tok, kind=kind, name=name, n_params=n_params)


def model_kind(config: object) -> ModelKind:
    """``causal-lm`` if the config's architectures name a causal LM head, else ``encoder``."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal-lm"
    if getattr(config, "is_decoder", False) and not getattr(config, "is_encoder_decoder", False):
        return "causal-lm"
    return "encoder"


def _from_pretrained(source: str, dtype: torch.dtype) -> LoadedModel:
    """A transformers model id or local directory (hub ids need HF_HUB_OFFLINE unset)."""
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"model {source!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "nor a local directory with a config.json, nor a reachable hub id "
            f"(hub access needs network and HF_HUB_OFFLINE=0): {exc}"
        ) from exc
    kind = model_kind(config)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModel
    model = auto.from_pretrained(source, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(source)
    return _wrap(model, tok, kind, source)


def load_model(
    name: str = "smollm2-135m",
    *,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a model by name: one of :data:`EMBEDDED_MODELS`, a local dir or a hub id.

    Embedded assets are fetched into the cache on first use (see :mod:`fedzo.assets`).
    """
    builder = EMBEDDED_MODELS.get(name)
    if builder is not None:
        return builder(dtype, cache_dir)
    return _from_pretrained(name, dtype)


# --- SmolLM2: GGUF once, then an fp32 safetensors cache ------------------------------


def fp32_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of SmolLM2's fp32 safetensors cache (config, tokenizer, weights)."""
    return assets.asset_dir("smollm2-135m", cache_dir) / "derived" / _FP32_CACHE_TAG


def smollm2_cached(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether SmolLM2 loads from the cache alone: its asset and fp32 cache are present.

    A quick check (presence and sizes, no hashing); nothing is fetched or built.
    """
    return not assets.verify("smollm2-135m", cache_dir=cache_dir, full=False) and not assets.verify_tree(
        fp32_cache_dir(cache_dir), full=False
    )


def convert_gguf(gguf_folder: Path, gguf_file: str, out: Path) -> float:
    """Load a GGUF checkpoint with transformers, save it as fp32 safetensors; returns seconds.

    The GGUF loader leaves a quantizer marker that makes ``save_pretrained`` raise, so it
    is cleared first (the weights are already de-quantized to ordinary tensors).
    """
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_folder, gguf_file=gguf_file, dtype=torch.float32
    )
    seconds = time.perf_counter() - t0
    # An attribute transformers sets at load time; torch types Module.__setattr__ for
    # tensors and modules only, though any value is accepted.
    cast(Any, model).hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return seconds


def load_smollm2(
    *, cache_dir: str | os.PathLike[str] | None = None, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2-135M-Instruct from the fp32 cache, building the cache from the GGUF if needed.

    A cache whose files are missing or of the wrong size is rebuilt (``fedzo assets
    verify`` re-hashes it in full).
    """
    gguf_folder = assets.ensure("smollm2-135m", cache_dir=cache_dir)
    cache = fp32_cache_dir(cache_dir)
    if assets.verify_tree(cache, full=False):
        if cache.exists():
            log.warning("fp32 cache %s is damaged; rebuilding it from the GGUF", cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent, prefix=".build-") as tmp:
            staged = Path(tmp) / _FP32_CACHE_TAG
            seconds = convert_gguf(gguf_folder, _SMOLLM2_GGUF, staged)
            assets.write_tree_manifest(
                staged, {"source": _SMOLLM2_GGUF, "gguf_load_seconds": round(seconds, 2)}
            )
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(staged, cache)
        log.info("built fp32 cache %s (GGUF load %.1f s)", cache, seconds)
    try:
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(cache)
    except (OSError, ValueError) as exc:
        raise AssetError(
            f"the fp32 cache of smollm2-135m at {cache} cannot be loaded ({exc}); "
            f"remove that folder and it is rebuilt from the GGUF on next use"
        ) from exc
    return model, tok
