"""The shape numbers of a transformer config that the memory and work models read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import PretrainedConfig

from fedzo.errors import ConfigError


@dataclass(frozen=True)
class ArchDims:
    """The shape numbers the memory model needs, read from a config."""

    kind: Literal["decoder", "encoder"]
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    max_positions: int
    type_vocab: int
    num_labels: int
    eager_attention: bool

    @property
    def q_dim(self) -> int:
        """Width of the query projection."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection."""
        return self.kv_heads * self.head_dim


def arch_dims(config: PretrainedConfig) -> ArchDims:
    """Shape numbers of a llama-style decoder or a BERT-style encoder config."""
    get = config.to_dict().get
    hidden = get("hidden_size") or get("n_embd") or get("d_model")
    layers = get("num_hidden_layers") or get("n_layer")
    heads = get("num_attention_heads") or get("n_head")
    if not (hidden and layers and heads):
        raise ConfigError(
            f"model config {type(config).__name__}: needs hidden_size, num_hidden_layers and "
            "num_attention_heads (llama-style decoders and BERT-style encoders are supported)"
        )
    is_encoder = config.model_type in {"bert", "roberta", "distilbert", "electra", "xlm-roberta"}
    head_dim = get("head_dim") or hidden // heads
    return ArchDims(
        kind="encoder" if is_encoder else "decoder",
        layers=int(layers), hidden=int(hidden),
        intermediate=int(get("intermediate_size") or get("n_inner") or 4 * hidden),
        heads=int(heads), kv_heads=int(get("num_key_value_heads") or heads),
        head_dim=int(head_dim), vocab=int(get("vocab_size") or 0),
        tied=bool(get("tie_word_embeddings", True)),
        max_positions=int(get("max_position_embeddings") or 0),
        type_vocab=int(get("type_vocab_size") or 0),
        num_labels=int(getattr(config, "num_labels", None) or 2),
        eager_attention=getattr(config, "_attn_implementation", None) == "eager",
    )
