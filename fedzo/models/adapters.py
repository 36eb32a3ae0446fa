"""Parameter-efficient wrappers (peft): which parameters a fine-tuning run may change.

The trainable set is marked by ``requires_grad``; ZO code walks the parameters with
``requires_grad`` sorted by name. LoRA targets are found by module type (every
``nn.Linear`` inside a module whose class is an attention block), never by name
substrings, so the same call works for Llama, BERT and other architectures.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from fedzo.errors import ConfigError

__all__ = ["PEFT_MODES", "PeftMode", "apply_peft", "attention_linear_names", "trainable_names"]

PeftMode = Literal["full", "lora", "prefix", "prompt"]
PEFT_MODES: tuple[str, ...] = ("full", "lora", "prefix", "prompt")


def _is_attention(module: nn.Module) -> bool:
    """True for attention blocks, recognised by their class (e.g. LlamaAttention)."""
    return type(module).__name__.endswith("Attention")


def attention_linear_names(model: nn.Module) -> list[str]:
    """Full names of the ``nn.Linear`` modules that sit inside attention blocks."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        if not _is_attention(module):
            continue
        for sub, child in module.named_modules():
            if isinstance(child, nn.Linear) and sub:
                names.add(f"{prefix}.{sub}" if prefix else sub)
    return sorted(names)


def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters with ``requires_grad``, sorted (the ZO walk order)."""
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def _task_type(model: nn.Module) -> str:
    """peft task type: causal LMs (models that can generate) get the LM prompt wiring."""
    can_generate = getattr(model, "can_generate", None)
    return "CAUSAL_LM" if callable(can_generate) and can_generate() else "FEATURE_EXTRACTION"


def apply_peft(
    model: nn.Module,
    mode: PeftMode = "full",
    *,
    r: int = 8,
    alpha: int = 16,
    num_virtual_tokens: int = 10,
    target_modules: list[str] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Mark (and if needed wrap) ``model`` for fine-tuning with ``mode``; eval mode kept.

    - ``full``: every parameter trainable, model returned as is.
    - ``lora``: rank ``r`` adapters (scale ``alpha / r``, no dropout, so two forward
      passes agree) on ``target_modules`` (default: the linears inside attention blocks).
    - ``prefix`` / ``prompt``: ``num_virtual_tokens`` learned key/value prefixes or input
      embeddings (peft prefix / prompt tuning).

    Adapter initialisation is seeded by ``seed``: the same call gives the same adapters in
    every process.
    """
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, PeftConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if mode == "lora":
        targets = target_modules if target_modules is not None else attention_linear_names(model)
        if not targets:
            raise ConfigError(
                f"peft mode 'lora': no nn.Linear inside an attention block of "
                f"{type(model).__name__}; pass target_modules=[...] explicitly"
            )
        config: PeftConfig = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets)
    elif mode == "prefix":
        config = PrefixTuningConfig(task_type=_task_type(model), num_virtual_tokens=num_virtual_tokens)
    elif mode == "prompt":
        # Virtual tokens start as embeddings of randomly sampled vocabulary tokens (seeded
        # below): same scale as real inputs, so the starting accuracy stays
        # near zero-shot instead of collapsing under N(0, 1) embeddings.
        from peft import PromptTuningInit

        config = PromptTuningConfig(task_type=_task_type(model), num_virtual_tokens=num_virtual_tokens,
                                    prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB)
    else:
        raise ConfigError(f"peft mode {mode!r} is not one of {', '.join(PEFT_MODES)}")
    # Adapter initialisation (LoRA's A, sampled prompt tokens) draws from torch's global
    # generator: pin it so that every process (server, clients, a resumed run) builds the
    # same starting adapters, and leave the caller's generator state untouched.
    dtype = next(model.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        wrapped = get_peft_model(model, config, autocast_adapter_dtype=False)
    return _trainable_in(wrapped, dtype).eval()


def _trainable_in(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the trainable tensors to the base model's ``dtype`` (peft keeps LoRA adapters in
    float32 under a half-precision base unless told otherwise, and creates virtual tokens in
    float32): a run's perturbations, updates and replay all happen in one dtype."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model


def base_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside ``model`` (unwrapping a PEFT model)."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else model
    if not isinstance(base, PreTrainedModel):
        raise ConfigError(f"{type(base).__name__} is not a transformers model; fedzo trains PreTrainedModels")
    return base


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing for backprop: each transformer layer keeps only its input and
    recomputes its activations in the backward pass (less memory, one more forward)."""
    base = base_model(model)
    if not base.supports_gradient_checkpointing:
        raise ConfigError(f"{type(base).__name__} does not support activation checkpointing")
    enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5
    if callable(enable):
        enable({"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if model is not base:  # PEFT: frozen embeddings must still pass gradients to the layers' inputs
        base.enable_input_require_grads()
    # transformers checkpoints a layer only while that layer is in training mode; fedzo keeps
    # models in eval mode (no dropout: the same batch gives the same loss). Flip the layers'
    # own flag only, so their dropout submodules stay off.
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ConfigError(f"{type(base).__name__} has no checkpointable layers")
    for layer in layers:
        layer.training = True
