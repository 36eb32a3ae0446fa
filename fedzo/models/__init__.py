"""Models: loading by name (embedded asset, tiny model, local dir, hub id) and PEFT wrapping."""

from fedzo.models.adapters import (
    PEFT_MODES,
    PeftMode,
    apply_peft,
    attention_linear_names,
    trainable_names,
)
from fedzo.models.loading import EMBEDDED_MODELS, LoadedModel, ModelKind, load_model, model_kind

__all__ = [
    "EMBEDDED_MODELS",
    "PEFT_MODES",
    "LoadedModel",
    "ModelKind",
    "PeftMode",
    "apply_peft",
    "attention_linear_names",
    "load_model",
    "model_kind",
    "trainable_names",
]
