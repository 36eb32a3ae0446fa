"""Tiny models built from a config (2 layers, hidden 64, 4 heads), for tests and dry runs.

The tokenizer is a word-level `tokenizers` model over a fixed English word list built in
code: fully offline, deterministic, and every word (with or without a leading space) is
one token, so any verbalizer drawn from the list passes the single-token check. Words
outside the list map to ``<unk>``.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

__all__ = ["TINY_VOCAB", "build_tiny_bert", "build_tiny_llama", "build_tiny_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>")

_WORDS = ["the", "a", "an", "and", "or", "but", "not", "no", "yes", "is", "was", "were", "be", "been", "are", "am", "it", "this", "that", "these", "those", "i", "you", "he", "she", "we", "they", "me", "my", "your", "his", "her", "our", "their", "its", "of", "to", "in", "on", "at", "for", "with", "from", "by", "as", "about", "into", "over", "after", "before", "than", "so", "very", "really", "quite", "too", "just", "also", "still", "even", "movie", "film", "story", "plot", "actors", "acting", "cast", "director", "script", "scenes", "ending", "music", "book", "product", "item", "phone", "price", "quality", "service", "food", "place", "day", "time", "people", "world", "news", "review", "tweet", "article", "sentence", "text", "input", "label", "answer", "topic", "sentiment", "question", "overall", "positive", "negative", "neutral", "good", "great", "excellent", "wonderful", "amazing", "superb", "brilliant", "delightful", "fun", "funny", "charming", "beautiful", "lovely", "perfect", "best", "enjoyable", "moving", "touching", "fantastic", "awesome", "pleasant", "fresh", "clever", "smart", "warm", "happy", "love", "loved", "like", "liked", "enjoyed", "bad", "terrible", "awful", "horrible", "poor", "boring", "dull", "worst", "ugly", "stupid", "annoying", "weak", "mess", "disappointing", "painful", "tedious", "bland", "lame", "sad", "hate", "hated", "dislike", "disliked", "waste", "failed", "sport", "business", "politics", "tech", "entertainment", "science", "health", "money", "game", "team", "match", "one", "two", "three", "word", "words", "reply", "with", "only", "either", "following", "what", "how", "which", "classify", "decide", "whether", "say", "tell"]
_PUNCT = list(".,:;!?'\"()-/")

TINY_VOCAB: tuple[str, ...] = tuple(dict.fromkeys([*SPECIAL_TOKENS, *_WORDS, *_PUNCT]))
"""Vocabulary of the tiny tokenizer: special tokens, then words, then punctuation."""

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

SEED = 0
"""Torch seed of the tiny models' random initialisation."""


def build_tiny_tokenizer(*, add_bos_eos: bool = False) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over :data:`TINY_VOCAB` with pad/eos/unk set.

    ``add_bos_eos`` wraps each sequence in ``<s> ... </s>`` (encoder style).
    """
    vocab = {w: i for i, w in enumerate(TINY_VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    if add_bos_eos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> $B </s>",
            special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        padding_side="left" if not add_bos_eos else "right",
    )
    fast.chat_template = _CHAT_TEMPLATE
    return fast


def _seeded_init(build: type[PreTrainedModel], config: PretrainedConfig, **kwargs: object) -> PreTrainedModel:
    """Build a model with a fixed torch seed, leaving the global random state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build(config, **kwargs)
    return model.eval()


def build_tiny_llama() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A 2-layer Llama causal LM (hidden 64, 4 heads, 2 KV heads, tied embeddings)."""
    tok = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return _seeded_init(LlamaForCausalLM, config), tok


def build_tiny_bert() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A 2-layer BERT encoder (hidden 64, 4 heads) without pooler or MLM head."""
    tok = build_tiny_tokenizer(add_bos_eos=True)
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    return _seeded_init(BertModel, config, add_pooling_layer=False), tok
