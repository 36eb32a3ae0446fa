"""Prompt tuning in a joint forward: each client's virtual tokens run once, not once per row.

Under prompt tuning a causal LM reads a client's virtual tokens first, before the pads and
the text of each row. Causal attention never looks right, so the keys and values at those
positions depend on the client's virtual tokens alone: they are the same in every row of
that client's batch. A client's own forward (and the plain joint forward of
:mod:`fedzo.federation.transports.batched.rowstate`) computes them again for every row. :func:`prompt_scores`
computes them once per block of rows (one client's rows in a pass), then runs the rows'
own tokens against those keys and values, expanded to the rows, at the positions that
follow the virtual tokens, as the full forward places them. On the tiny model (10 virtual
tokens before rows of about 14) that is about 40 % fewer token positions per pass.

This is host-side only: every client is still priced for its own full forward. The scores
are those of the full forward up to float32 rounding (a pass of another shape), the
batched engine's stated tolerance; a test checks them against the plain joint forward.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from fedzo.tasks.batching import Batch
from fedzo.tasks.classifiers import PromptClassifier, last_positions, output_head


def _decoder(classifier: Any) -> Any:
    """The decoder stack (embeddings to final norm) under a PEFT-wrapped causal LM, or None."""
    base = getattr(classifier.model, "base_model", None)
    get = getattr(base, "get_decoder", None)
    return get() if callable(get) else None


NOT_PROMPT_TUNING = "not prompt tuning"


def prompt_cache_reason(classifier: Any) -> str | None:
    """Why :func:`prompt_scores` cannot serve ``classifier`` (None: it can)."""
    cfg = getattr(classifier.model, "active_peft_config", None)
    if getattr(getattr(cfg, "peft_type", None), "value", None) != "PROMPT_TUNING":
        return NOT_PROMPT_TUNING
    if not isinstance(classifier, PromptClassifier):
        return "not a causal LM's prompt classifier"
    decoder = _decoder(classifier)
    if decoder is None:
        return "the model has no decoder stack to run apart from its head"
    params = inspect.signature(decoder.forward).parameters
    if not ({"cache", "past_key_values"} & set(params)) or "inputs_embeds" not in params:
        return "the decoder takes no key/value cache"
    return None


@functools.cache
def _cache_kwarg(decoder_type: Any) -> str:
    """The name a decoder class gives its key/value cache (``cache``; ``past_key_values``
    before transformers 5.x renamed it), looked up once per class."""
    return "cache" if "cache" in inspect.signature(decoder_type.forward).parameters else "past_key_values"


def prompt_scores(classifier: Any, batch: Batch, prompts: Sequence[torch.Tensor], rows: Sequence[int]) -> torch.Tensor:
    """Class scores of ``batch`` (B, num_labels), whose rows come in blocks of ``rows[i]``
    rows that read the virtual-token embeddings ``prompts[i]`` (V, H) first.

    One decoder pass over the blocks' virtual tokens fills a key/value cache; it is
    expanded to the rows, and a second pass runs the rows' tokens after it."""
    model = classifier.model
    decoder = _decoder(classifier)
    key = _cache_kwarg(decoder.__class__)
    embeds = model.word_embeddings(batch.input_ids)
    virtual = torch.stack(list(prompts)).to(embeds.dtype)  # (blocks, V, H)
    first = decoder(inputs_embeds=virtual, use_cache=True)
    cache = getattr(first, key, None)
    if cache is None:
        raise RuntimeError(f"{type(decoder).__name__} returned no {key} after a pass with use_cache=True")
    owner = torch.repeat_interleave(torch.arange(len(rows), device=embeds.device),
                                    torch.tensor(list(rows), device=embeds.device))
    cache.batch_select_indices(owner)
    mask = batch.attention_mask
    full = torch.cat([torch.ones(mask.shape[0], virtual.shape[1], dtype=mask.dtype, device=mask.device), mask], 1)
    hidden = decoder(inputs_embeds=embeds, attention_mask=full, use_cache=True, **{key: cache}).last_hidden_state
    answer = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]
    return output_head(model)(answer.unsqueeze(1))[:, -1, :].index_select(-1, classifier.label_token_ids)


def block_prompts(classifier: Any, tables: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each block's virtual-token embeddings (V, H) from its client's prompt table, looked
    up as the PEFT model's own ``get_prompt`` does."""
    model = classifier.model
    tokens = model.prompt_tokens[model.active_adapter].to(tables[0].device)
    return [F.embedding(tokens, t) for t in tables]
