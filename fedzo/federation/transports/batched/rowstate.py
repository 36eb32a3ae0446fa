"""Per-row client state in a joint forward: each client's rows see its own trainable tensors.

The batched engine's ``rows`` mode (:mod:`fedzo.federation.transports.batched`) runs the forward
passes of clients whose small trainable sets have diverged (several local steps) as one
pass over all their rows. The frozen base is shared; what differs per client is applied
per block of rows, with the same operations a client's own forward uses:

* prompt tuning: each block's prompts are its client's virtual tokens, laid out as the
  PEFT model's ``get_prompt`` lays them out, and the prompts are concatenated;
* prefix tuning: the prefix encoder embeds each block's virtual tokens with that client's
  table (every layer's keys and values);
* LoRA: every LoRA linear adds ``B_i (A_i x) * scaling`` to the frozen layer's output for
  block ``i``, with client ``i``'s ``A`` and ``B``; a linear that trains whole beside the
  adapters (an encoder classifier's head) uses client ``i``'s weight and bias.

* full weights (no PEFT wrapper): every layer that owns trained parameters runs block ``i``
  with client ``i``'s copy of them (:mod:`fedzo.federation.transports.batched.fullrows`).

Prompt or prefix tuning of an encoder (whose head trains too) is not supported here:
:func:`rows_reason` says why, and the engine runs such rounds one client at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from fedzo.federation.transports.batched.fullrows import forwards_replaced, full_reason, per_row_full
from fedzo.tasks.classifiers import PromptClassifier
from fedzo.zo import ParamSet

States = Sequence[Sequence[torch.Tensor]]  # per block of rows: the client's trainable tensors, in work order


def _peft_kind(model: Any) -> str | None:
    cfg = getattr(model, "active_peft_config", None)
    return getattr(getattr(cfg, "peft_type", None), "value", None)


def _lora_layers(model: Any) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and hasattr(m, "base_layer")]


def _trained_linears(root: Any, work: ParamSet) -> list[torch.nn.Linear]:
    """Plain linears whose weights all train (an encoder classifier's head), LoRA's own excluded."""
    lora = {id(x) for m in _lora_layers(root) for d in (m.lora_A, m.lora_B) for x in d.values()}
    ptrs = {t.data_ptr() for t in work.tensors}
    return [m for m in root.modules() if type(m) is torch.nn.Linear and id(m) not in lora
            and m.weight.data_ptr() in ptrs]


def _lora_reason(classifier: Any, work: ParamSet) -> str | None:
    owned: set[int] = set()
    for m in _lora_layers(classifier):
        if m.merged or len(m.active_adapters) != 1 or type(m.base_layer) is not torch.nn.Linear:
            return "a LoRA layer is merged, has several active adapters or wraps a non-linear layer"
        name = m.active_adapters[0]
        if name in m.lora_variant or not isinstance(m.lora_dropout[name], torch.nn.Identity):
            return "a LoRA layer uses a variant (DoRA, ...) or dropout"
        owned |= {m.lora_A[name].weight.data_ptr(), m.lora_B[name].weight.data_ptr()}
    for lin in _trained_linears(classifier, work):
        owned |= {p.data_ptr() for p in lin.parameters()}
    if any(t.data_ptr() not in owned for t in work.tensors):
        return "parameters outside the LoRA adapters and trained linear heads are trained"
    return None


_VIRTUAL = ("PROMPT_TUNING", "PREFIX_TUNING")


def _virtual_reason(classifier: Any, work: ParamSet) -> str | None:
    encoder = getattr(classifier.model, "prompt_encoder", None)
    encoder = encoder[classifier.model.active_adapter] if isinstance(encoder, torch.nn.ModuleDict) else encoder
    embedding = getattr(encoder, "embedding", None)
    if not isinstance(embedding, torch.nn.Embedding) or getattr(encoder, "prefix_projection", False):
        return "the PEFT model's virtual tokens are not a plain embedding (prefix projection?)"
    if any(t.data_ptr() != embedding.weight.data_ptr() for t in work.tensors):
        return "parameters outside the virtual tokens are trained"
    return None


def rows_reason(classifier: Any, work: ParamSet) -> str | None:
    """Why each row cannot carry its own client's trainable state (None: it can)."""
    kind = _peft_kind(classifier.model)
    if kind is None:
        return full_reason(classifier, work)
    if kind == "LORA":
        return _lora_reason(classifier, work)
    if kind not in _VIRTUAL or not isinstance(classifier, PromptClassifier):
        return "per-row client state is implemented for full weights, LoRA, and prompt or prefix tuning of a causal LM"
    return _virtual_reason(classifier, work)


def prompt_table_index(model: Any, work: ParamSet) -> int:
    """Which of ``work``'s tensors is the PEFT model's virtual-token table."""
    table = model.prompt_encoder[model.active_adapter].embedding.weight
    (k,) = [i for i, t in enumerate(work.tensors) if t.data_ptr() == table.data_ptr()]
    return k


@contextmanager
def per_row_prompts(model: Any, work: ParamSet, states: States, rows: Sequence[int]) -> Iterator[None]:
    """Prompt tuning: while active, the PEFT model's virtual tokens for row block ``i`` are
    ``states[i]``'s. Each block's prompts are what the model's own ``get_prompt`` computes
    (the embedding of one row of prompt tokens, repeated per row), read from the block's
    state rather than from the model's table: nothing is copied into the model, so the
    states may carry forward-mode tangents (forward gradients)."""
    encoder = model.prompt_encoder[model.active_adapter]
    k = prompt_table_index(model, work)
    tokens = model.prompt_tokens[model.active_adapter].unsqueeze(0)[:1].to(encoder.embedding.weight.device)

    def get_prompt(batch_size: int, **kwargs: Any) -> torch.Tensor:
        if batch_size != sum(rows):
            raise RuntimeError(f"a joint forward of {sum(rows)} rows asked for {batch_size} prompts")
        return torch.cat([F.embedding(tokens, state[k]).repeat(n, 1, 1) for state, n in zip(states, rows, strict=True)])

    model.get_prompt = get_prompt
    try:
        yield
    finally:
        del model.get_prompt


@contextmanager
def per_row_prefixes(model: Any, work: ParamSet, states: States, rows: Sequence[int]) -> Iterator[None]:
    """Prefix tuning: while active, the prefix encoder embeds row block ``i``'s virtual
    tokens with ``states[i]``'s table (every layer's keys and values, which the PEFT model
    then lays out per row)."""
    encoder = model.prompt_encoder[model.active_adapter]
    k = prompt_table_index(model, work)

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[0] != sum(rows):
            raise RuntimeError(f"a joint forward of {sum(rows)} rows asked for {tokens.shape[0]} prompts")
        return torch.cat([F.embedding(block, state[k]) for block, state in
                          zip(tokens.split(list(rows)), states, strict=True)])

    encoder.forward = forward
    try:
        yield
    finally:
        del encoder.forward


def _split(x: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
    if x.shape[0] != sum(rows):
        raise RuntimeError(f"a joint forward of {sum(rows)} rows met a layer input of {x.shape[0]}")
    return x.split(list(rows))


def per_row_lora(classifier: Any, work: ParamSet, states: States,
                 rows: Sequence[int]) -> AbstractContextManager[None]:
    """While active, every LoRA linear applies block ``i``'s adapters from ``states[i]``, and
    every fully trained linear (an encoder's head) block ``i``'s weight and bias."""
    index = {t.data_ptr(): k for k, t in enumerate(work.tensors)}
    patches: list[tuple[torch.nn.Module, Any]] = []
    for m in _lora_layers(classifier):
        name = m.active_adapters[0]
        ia, ib = index[m.lora_A[name].weight.data_ptr()], index[m.lora_B[name].weight.data_ptr()]

        def forward(x: torch.Tensor, *args: Any, _m: Any = m, _a: int = ia, _b: int = ib,
                    _s: float = m.scaling[name], **kwargs: Any) -> torch.Tensor:
            result = _m.base_layer(x, *args, **kwargs)
            delta = [F.linear(F.linear(block, state[_a]), state[_b]) * _s
                     for block, state in zip(_split(x, rows), states, strict=True)]
            return (result + torch.cat(delta)).to(result.dtype)

        patches.append((m, forward))
    for lin in _trained_linears(classifier, work):
        iw, ibias = index[lin.weight.data_ptr()], None if lin.bias is None else index[lin.bias.data_ptr()]

        def linear(x: torch.Tensor, _w: int = iw, _b: int | None = ibias) -> torch.Tensor:
            return torch.cat([F.linear(block, state[_w], None if _b is None else state[_b])
                              for block, state in zip(_split(x, rows), states, strict=True)])

        patches.append((lin, linear))
    return forwards_replaced(patches)


def stackable(classifier: Any) -> bool:
    """Whether a ``rows`` round keeps its clients' copies stacked (module stacked): full
    weights and LoRA, whose trained tensors all sit in leaf layers (the virtual tokens of
    prompt and prefix tuning run once per client and pass already)."""
    return _peft_kind(classifier.model) in (None, "LORA")


def per_row_state(classifier: Any, work: ParamSet, states: States, rows: Sequence[int]) -> Any:
    """The context in which ``classifier``'s forward gives row block ``i`` the state ``states[i]``."""
    kind = _peft_kind(classifier.model)
    if kind is None:
        return per_row_full(classifier, work, states, rows)
    if kind == "LORA":
        return per_row_lora(classifier, work, states, rows)
    return (per_row_prefixes if kind == "PREFIX_TUNING" else per_row_prompts)(classifier.model, work, states, rows)
