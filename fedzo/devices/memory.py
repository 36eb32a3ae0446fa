"""Memory model: bytes needed to train a transformers model by backprop (BP) or by ZO.

Counts are per *token* and per *layer*, from the tensors PyTorch keeps alive (listed next
to each constant), in the element size of ``dtype``. The model distinguishes memory that
stays resident for the whole step (weights, optimizer states, the framework itself) from
transient peaks that do not coexist in PyTorch: activations are freed during backward
before the optimizer step allocates its temporaries. ``MemoryBreakdown.total`` is
resident + the largest transient phase; ``additive_total`` is the conservative sum.

Supported shapes: llama-style decoders (``model_type`` llama, mistral, qwen2, ... any
config with ``intermediate_size`` and a causal LM head) and BERT-style encoders with a
sequence-classification head. Attention is assumed to run through SDPA (no S x S matrix
kept) unless ``config._attn_implementation == "eager"``. fedzo trains with dropout off
(models stay in eval mode, so the same batch gives the same loss), so no dropout masks or
dropped attention probabilities are kept, whatever the config's dropout probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from transformers import PretrainedConfig

from fedzo.devices.dims import ArchDims, arch_dims
from fedzo.errors import ConfigError

Mode = Literal["zo", "bp"]
PeftMode = Literal["full", "lora", "prefix"]
Optimizer = Literal["sgd", "momentum", "adam"]
STATE_COPIES: dict[str, int] = {"sgd": 0, "momentum": 1, "adam": 2}  # dense buffers the size of the trainable set
LogitsMode = Literal["full", "last"]

DTYPE_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2}

# Resident set of a CPU process after importing torch 2.13 (CPU), transformers 5.23 with the
# Llama and BERT model modules, and fedzo, on the 2-core x86 reference host (measured: 254 MB
# for torch + transformers alone, 356 MB with the model modules). `fedzo memory --validate`
# re-measures it and prints it; a device profile may override it (runtime_overhead).
RUNTIME_OVERHEAD_BYTES = 356_000_000

DEFAULT_CHUNK_ELEMENTS = 1 << 20

# glibc on the CPU host keeps freed blocks in its heaps, so the resident peak exceeds the
# live tensors: measured 0-50 % over the transient (activation/logit/gradient) bytes, and
# a reserve after model construction and the first forward (lazily created kernel buffers,
# fragments of loading and of a dtype conversion, growing with the weights). The three
# numbers are the minimax fit (`python -m analysis.experiments.allocator_fit`) to the
# medians of 3 fresh processes per case of `fedzo memory --validate` on the 2-core x86
# reference host (analysis/results/memory/allocator_fit: worst error 8.1 %, 9.3 % for a
# case left out of the fit). Another C library or device keeps other amounts; pass
# allocator_slack=0, allocator_reserve=0 for live tensors only.
ALLOCATOR_SLACK = 0.35
ALLOCATOR_RESERVE_BYTES = 25_000_000
ALLOCATOR_RESERVE_PER_WEIGHT_BYTE = 0.15


def count_parameters(d: ArchDims) -> int:
    """Parameters of LlamaForCausalLM / BertForSequenceClassification with these shapes."""
    h, i = d.hidden, d.intermediate
    if d.kind == "decoder":
        per_layer = h * d.q_dim + 2 * h * d.kv_dim + d.q_dim * h + 3 * h * i + 2 * h
        head = 0 if d.tied else d.vocab * h
        return d.vocab * h + d.layers * per_layer + h + head
    emb = (d.vocab + d.max_positions + d.type_vocab) * h + 2 * h
    per_layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    pooler_and_head = h * h + h + h * d.num_labels + d.num_labels
    return emb + d.layers * per_layer + pooler_and_head


def largest_tensor(d: ArchDims) -> int:
    """Elements of the largest parameter tensor (the token embedding for these families)."""
    return max(d.vocab * d.hidden, d.hidden * d.intermediate)


def trainable_parameters(
    d: ArchDims, peft: PeftMode = "full", *, lora_rank: int = 8, prefix_tokens: int = 16
) -> tuple[int, int]:
    """(trainable parameter count, elements of the largest trainable tensor).

    LoRA adapts the query and value projections (PEFT's default for llama and BERT) and,
    for encoders, trains the classifier; prefix tuning trains ``prefix_tokens`` key/value
    vectors per layer.
    """
    if peft == "full":
        return count_parameters(d), largest_tensor(d)
    if peft == "lora":
        per_layer = lora_rank * (d.hidden + d.q_dim) + lora_rank * (d.hidden + d.kv_dim)
        head = d.hidden * d.num_labels + d.num_labels if d.kind == "encoder" else 0
        return d.layers * per_layer + head, max(lora_rank * d.hidden, head)
    if peft == "prefix":
        per_layer = 2 * prefix_tokens * d.kv_dim
        return d.layers * per_layer, per_layer
    raise ConfigError(f"peft: {peft!r} is not one of full, lora, prefix")


def layer_saved_elements(d: ArchDims, seq: int, *, training: bool, peft: PeftMode = "full",
                         half: bool = False) -> float:
    """Elements kept per token by one layer: saved for backward (BP) or live at once (ZO),
    in elements of the model's dtype.

    Decoder, BP, every weight trained: 2 RMSNorms save input and output (4h); q/k/v input
    (h); q, k, v and the rotated q, k kept for SDPA (2q + 3kv); attention output and o_proj
    input (2q); MLP gate, SiLU output, up and their product (4I).
    Decoder, BP, base frozen (LoRA, prefix, prompt): a frozen weight needs no input saved,
    so the norms keep only their inputs (2h), SDPA its rotated q, k, v and output (2q + 2kv)
    and the MLP SiLU's input and the product's operands (3I); LoRA on the attention linears
    adds their inputs (h + q). Measured on SmolLM2-135M LoRA 8 x 64: 496 MB of live tensors,
    this count 0.71 of the full one (the full count over-predicted it by 49 %).
    Decoder, ZO (no grad, one layer alive): residual, normed input, attention output, its
    contiguous copy for o_proj and the carried hidden state (5h) plus gate/up/product of
    the MLP (3I). Encoder, ZO: the same 5h with intermediate and GELU output (2I).
    Encoder, BP: q/k/v input, q, k, v, context, the attention and FFN dense outputs,
    2 LayerNorm inputs and outputs (10h), intermediate and GELU output (2I); base frozen:
    LayerNorm inputs, q, k, v and context (6h) and the GELU input (I), LoRA adding the
    inputs of the attention linears (2h). With eager attention also the scores and
    softmax output (2 x heads x S).
    Half precision (``half``), decoder, BP: each RMSNorm computes in float32 and saves the
    float32 copy of its input instead of the input itself, twice the bytes: 2h more per
    layer (measured on tiny llama bf16 32 x 128: five float32 copies, one per norm).
    """
    h, i, kv, q = d.hidden, d.intermediate, d.kv_dim, d.q_dim
    scores = 2 * d.heads * seq if d.eager_attention else 0
    lora = peft == "lora"
    if d.kind == "decoder":
        if not training:
            return 5 * h + 3 * i + scores
        norms = 2 * h if half else 0
        if peft == "full":
            return 5 * h + 4 * q + 3 * kv + 4 * i + scores + norms
        return 2 * h + 2 * q + 2 * kv + 3 * i + (h + q if lora else 0) + scores + norms
    if not training:
        return 5 * h + 2 * i + scores
    if peft == "full":
        return 10 * h + 2 * i + scores
    return 6 * h + i + (2 * h if lora else 0) + scores


def logits_elements(d: ArchDims, batch: int, seq: int, logits: LogitsMode) -> int:
    """Elements of the model's output scores (vocabulary logits, or classifier logits)."""
    if d.kind == "encoder":
        return batch * d.num_labels
    return batch * (seq if logits == "full" else 1) * d.vocab


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes by component, and how they combine into the peak (``total``).

    ``phases`` are transient working sets that do not coexist; the peak is the resident
    part (weights, optimizer states, runtime, allocator reserve) plus the largest phase
    times (1 + allocator_slack).
    """

    mode: Mode
    weights: int
    gradients: int
    optimizer_states: int
    optimizer_temporaries: int
    activations: int
    logits: int
    perturbation_chunk: int
    runtime_overhead: int
    phases: tuple[tuple[str, int], ...]
    allocator_slack: float = 0.0
    allocator_reserve: int = 0

    @property
    def resident(self) -> int:
        """Bytes held for the whole step: weights, optimizer states, framework, allocator."""
        return self.weights + self.optimizer_states + self.runtime_overhead + self.allocator_reserve

    @property
    def largest_phase(self) -> int:
        """Bytes of tensors live at once in the largest phase (no allocator slack)."""
        return max(b for _, b in self.phases)

    @property
    def transient(self) -> int:
        """The largest phase, with the allocator's slack on top."""
        return int(self.largest_phase * (1.0 + self.allocator_slack))

    @property
    def peak_phase(self) -> str:
        """Name of the largest transient phase."""
        return max(self.phases, key=lambda p: p[1])[0]

    @property
    def total(self) -> int:
        """Predicted peak bytes of the training process."""
        return self.resident + self.transient

    @property
    def additive_total(self) -> int:
        """Every component added up (with the same slack): ignores the freeing order."""
        transient = (
            self.gradients + self.optimizer_temporaries + self.activations + self.logits
            + self.perturbation_chunk
        )
        return self.resident + int(transient * (1.0 + self.allocator_slack))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready dict, with ``total`` and ``peak_phase``."""
        out = asdict(self)
        out["phases"] = dict(self.phases)
        out["total"] = self.total
        out["transient"] = self.transient
        out["peak_phase"] = self.peak_phase
        return out


def estimate_memory(
    config: PretrainedConfig,
    mode: Mode,
    *,
    batch: int,
    seq: int,
    dtype: str = "fp32",
    peft: PeftMode = "full",
    lora_rank: int = 8,
    prefix_tokens: int = 16,
    optimizer: Optimizer = "sgd",
    logits: LogitsMode | None = None,
    checkpoint_fraction: float = 0.0,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    noise_bytes: int = 4,
    runtime_overhead: int | None = None,
    allocator_slack: float = ALLOCATOR_SLACK,
    allocator_reserve: int | None = None,
    mask: str = "none",
    forward_grad: bool = False,
    server_state: int = 0,
) -> MemoryBreakdown:
    """Peak bytes to train ``config`` at batch x seq tokens by ZO or BP.

    ``logits`` defaults to "last" for ZO (the answer position) and "full" for BP (every position).
    ``checkpoint_fraction`` is the share of layers whose activations are recomputed in
    backward (BP only). ``chunk_elements`` x ``noise_bytes`` is the ZO perturbation buffer.
    ``allocator_slack``/``allocator_reserve`` model the CPU allocator (see constants; the
    reserve defaults to ALLOCATOR_RESERVE_BYTES + ALLOCATOR_RESERVE_PER_WEIGHT_BYTE x weights).
    ``optimizer`` is either method's: ZO-SGD keeps nothing, ZO-SGD-MMT (``momentum``) one
    and ZO-Adam two dense buffers the size of the trainable set (Adam also a chunk-sized
    temporary while it updates); BP SGD with ``momentum`` one buffer, Adam two.
    ``mask``: a ZO sparse mask; ``magnitude`` holds 1 bit per trainable parameter (counted
    as optimizer state), ``random`` is regenerated and holds nothing.
    ``forward_grad``: ZO by forward gradients (tangents of activations and logits, the dense
    direction, and the temporaries of :func:`_tangent_temporaries`). ``server_state``: dense
    copies of the trainable set a ZO client keeps for a server optimizer (momentum 1, Adam 2).
    """
    _check_inputs(mode, dtype, optimizer, batch, seq, checkpoint_fraction)
    d = arch_dims(config)
    el = DTYPE_BYTES[dtype]
    n_params = count_parameters(d)
    trainable, largest_trainable = trainable_parameters(d, peft, lora_rank=lora_rank, prefix_tokens=prefix_tokens)
    weights = (n_params + (trainable if peft != "full" else 0)) * el
    runtime = RUNTIME_OVERHEAD_BYTES if runtime_overhead is None else runtime_overhead
    if allocator_reserve is None:
        allocator_reserve = int(ALLOCATOR_RESERVE_BYTES + ALLOCATOR_RESERVE_PER_WEIGHT_BYTE * weights)
    logits = logits or ("last" if mode == "zo" else "full")
    sizes = _Sizes(
        d=d, el=el, tokens=batch * seq, seq=seq, n_logits=logits_elements(d, batch, seq, logits),
        upcast=4 if el < 4 else 0,  # the loss upcasts half-precision logits to fp32
        trainable=trainable, largest_trainable=largest_trainable, weights=weights, runtime=runtime,
        allocator_slack=allocator_slack, allocator_reserve=allocator_reserve,
    )
    if mode == "zo":
        return _zo_memory(sizes, chunk_elements, noise_bytes, optimizer,
                          held_bytes=(-(-trainable // 8) if mask == "magnitude" else 0) + server_state * trainable * el,
                          tangent_temp=_tangent_temporaries(d, batch, seq, peft, el) if forward_grad else None)
    return _bp_memory(sizes, peft, optimizer, checkpoint_fraction)


def _check_inputs(
    mode: str, dtype: str, optimizer: str, batch: int, seq: int, checkpoint_fraction: float
) -> None:
    """Raise :class:`ConfigError` for an argument of :func:`estimate_memory` out of range."""
    if mode not in ("zo", "bp"):
        raise ConfigError(f"mode: {mode!r} is not one of zo, bp")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype: {dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
    if optimizer not in STATE_COPIES:
        raise ConfigError(f"optimizer: {optimizer!r} is not one of {', '.join(STATE_COPIES)}")
    if batch < 1 or seq < 1:
        raise ConfigError(f"batch and seq must be >= 1 (got batch={batch}, seq={seq})")
    if not 0.0 <= checkpoint_fraction <= 1.0:
        raise ConfigError(f"checkpoint_fraction: {checkpoint_fraction} must be in [0, 1]")


@dataclass(frozen=True)
class _Sizes:
    """What the ZO and the BP estimates both start from (bytes unless said otherwise)."""

    d: ArchDims
    el: int  # bytes per element
    tokens: int
    seq: int
    n_logits: int  # logit elements
    upcast: int  # extra bytes per logit when the loss upcasts to fp32
    trainable: int  # parameters
    largest_trainable: int  # elements of the largest trainable tensor
    weights: int
    runtime: int
    allocator_slack: float
    allocator_reserve: int


# A forward with tangents on CPU (PyTorch 2.13) runs attention through SDPA's math kernel,
# which materializes the scores and probabilities of a layer and their tangents: measured
# 5.6-5.9 fp32 copies of batch x heads x seq x seq at the peak (tiny llama, 64 rows, seq 256
# and 512, `fedzo memory --validate`-style runs), i.e. 4.5-4.7 live copies under the
# allocator's 25 % slack. A linear layer whose weight has no tangent (frozen under LoRA,
# prefix or prompt tuning) allocates a weight-sized zero tangent while it runs (measured:
# +121 MB for a 108 MB frozen weight): the largest such layer counts.
ATTENTION_TANGENT_COPIES = 4.6


def _tangent_temporaries(d: ArchDims, batch: int, seq: int, peft: PeftMode, el: int) -> int:
    """Transient bytes of a forward with tangents beyond the activations' own tangents:
    the larger of one layer's unfused attention matrices and the largest frozen weight."""
    attention = ATTENTION_TANGENT_COPIES * batch * d.heads * seq * seq * el
    if peft == "full":
        frozen = 0
    elif d.kind == "decoder":
        frozen = d.vocab * d.hidden  # the LM head
    else:
        frozen = d.hidden * d.intermediate
    return int(max(attention, frozen * el))


def _zo_memory(s: _Sizes, chunk_elements: int, noise_bytes: int, optimizer: Optimizer = "sgd",
               held_bytes: int = 0, tangent_temp: int | None = None) -> MemoryBreakdown:
    """ZO: inference activations, the loss's logits, one perturbation chunk, and the
    optimizer's buffers and ``held_bytes`` of other state (a mask's bits, a server optimizer's
    buffers). Forward gradients (``tangent_temp`` given: the
    tangent forward's temporaries) double the activations and logits (their tangents) and
    hold the dense direction during the forward."""
    forward_grad = tangent_temp is not None
    tangent = 2 if forward_grad else 1
    acts = int(layer_saved_elements(s.d, s.seq, training=False) * s.tokens * s.el) * tangent
    logit_bytes = s.n_logits * (s.el + s.upcast + 4) * tangent  # logits + fp32 log-softmax of the loss
    chunk_elements = min(chunk_elements, s.largest_trainable)
    chunk = chunk_elements * noise_bytes
    direction = s.trainable * s.el if forward_grad else 0
    states = STATE_COPIES[optimizer] * s.trainable * s.el + held_bytes
    temps = chunk_elements * s.el if optimizer == "adam" else 0  # Adam's denominator, per chunk
    phase = ("forward+tangent", acts + logit_bytes + direction + (tangent_temp or 0)) if forward_grad else \
        ("forward+perturb", acts + logit_bytes + chunk + temps)
    return MemoryBreakdown(
        mode="zo", weights=s.weights, gradients=0, optimizer_states=states,
        optimizer_temporaries=temps + direction, activations=acts, logits=logit_bytes,
        perturbation_chunk=chunk, runtime_overhead=s.runtime,
        phases=(phase, ("update", chunk + temps)) if forward_grad else (phase,),
        allocator_slack=s.allocator_slack, allocator_reserve=s.allocator_reserve,
    )


def _bp_memory(s: _Sizes, peft: PeftMode, optimizer: Optimizer, checkpoint_fraction: float) -> MemoryBreakdown:
    """BP: saved activations, logits and their gradient, gradients and optimizer state."""
    d, el = s.d, s.el
    half = el < 4 and d.kind == "decoder"
    per_layer = layer_saved_elements(d, s.seq, training=True, peft=peft, half=half)
    stored = (1 - checkpoint_fraction) * per_layer + checkpoint_fraction * d.hidden
    recompute = per_layer if checkpoint_fraction > 0 else 0.0
    # final norm in/out + head input (decoder; half precision: the norm's float32 input); embeddings (encoder)
    model_level = (4 if half else 3) * d.hidden
    acts = int((d.layers * stored + recompute + model_level) * s.tokens * el)
    logits_fwd = s.n_logits * (el + s.upcast + 4)  # logits (+ fp32 copy) + saved log-softmax
    logits_bwd = logits_fwd + s.n_logits * 4  # + gradient of the logits
    grads = s.trainable * el
    states = STATE_COPIES[optimizer] * s.trainable * el
    temps = 2 * s.largest_trainable * el if optimizer == "adam" else 0  # sqrt, division
    head_trainable = peft == "full" and d.kind == "decoder"
    head_grad = d.vocab * d.hidden * el if head_trainable else 0
    # Tied embeddings: the embedding's dense gradient is summed into the head's.
    embed_temp = d.vocab * d.hidden * el if head_trainable and d.tied else 0
    phases = (
        ("forward", acts + logits_fwd),
        ("backward-start", acts + logits_bwd + head_grad),
        ("backward-end", grads + embed_temp),
        ("optimizer-step", grads + temps),
    )
    return MemoryBreakdown(
        mode="bp", weights=s.weights, gradients=grads, optimizer_states=states,
        optimizer_temporaries=temps, activations=acts, logits=logits_bwd,
        perturbation_chunk=0, runtime_overhead=s.runtime, phases=phases,
        allocator_slack=s.allocator_slack, allocator_reserve=s.allocator_reserve,
    )
