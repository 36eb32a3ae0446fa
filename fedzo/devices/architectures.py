"""Model architectures written in code from public config numbers (nothing is downloaded).

Names accepted by ``fedzo memory --model`` and families used to find the largest model that
fits a budget. Numbers are those of the models' published ``config.json`` files; only the
shapes matter here (weights are never loaded).
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import BertConfig, LlamaConfig, PretrainedConfig

from fedzo.errors import ConfigError


def _llama(
    hidden: int, inter: int, layers: int, heads: int, kv: int, vocab: int, tied: bool
) -> Callable[[], PretrainedConfig]:
    def build() -> PretrainedConfig:
        """A Llama config of these shape numbers."""
        return LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
            tie_word_embeddings=tied, max_position_embeddings=8192,
        )
    return build


def _bert(hidden: int, layers: int, heads: int, inter: int) -> Callable[[], PretrainedConfig]:
    def build() -> PretrainedConfig:
        """A BERT config of these shape numbers, with a binary classification head."""
        config = BertConfig(
            vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=512,
        )
        config.num_labels = 2  # a binary classification head
        return config
    return build


# name -> builder. Sources: HuggingFaceTB/SmolLM2-*/config.json, meta-llama/Llama-3.*/config.json,
# sentence-transformers/all-MiniLM-L6-v2/config.json, google-bert/bert-{base,large}-uncased.
MODEL_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "tiny-llama": _llama(64, 128, 2, 4, 2, 1000, tied=True),  # test model, not a real one
    "smollm2-135m": _llama(576, 1536, 30, 9, 3, 49152, tied=True),
    "smollm2-360m": _llama(960, 2560, 32, 15, 5, 49152, tied=True),
    "llama3.2-1b": _llama(2048, 8192, 16, 32, 8, 128256, tied=True),
    "smollm2-1.7b": _llama(2048, 8192, 24, 32, 32, 49152, tied=True),
    "llama3.2-3b": _llama(3072, 8192, 28, 24, 8, 128256, tied=True),
    "llama3.1-8b": _llama(4096, 14336, 32, 32, 8, 128256, tied=False),
    "minilm-l6": _bert(384, 6, 12, 1536),
    "bert-base": _bert(768, 12, 12, 3072),
    "bert-large": _bert(1024, 24, 16, 4096),
}

# Families, smallest first: searched for the largest member that fits a budget.
FAMILIES: dict[str, tuple[str, ...]] = {
    "causal-lm": (
        "smollm2-135m", "smollm2-360m", "llama3.2-1b", "smollm2-1.7b", "llama3.2-3b",
        "llama3.1-8b",
    ),
    "encoder": ("minilm-l6", "bert-base", "bert-large"),
}


def model_config(name: str) -> PretrainedConfig:
    """A fresh config for a named architecture; ConfigError lists the known names."""
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"--model: {name!r} is not a known model (known: {', '.join(MODEL_CONFIGS)})")
    return MODEL_CONFIGS[name]()


def family_of(name: str) -> str:
    """The family a named model belongs to (``tiny-llama`` counts as causal-lm)."""
    for family, members in FAMILIES.items():
        if name in members:
            return family
    return "causal-lm" if name == "tiny-llama" else "encoder"
