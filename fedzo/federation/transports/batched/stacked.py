"""Whole clients per pass with stacked copies: one batched call per trained layer, not one per client.

With several local steps (or several directions updated one after another) every client of
a ``rows`` round holds its own copy of the trainable tensors: the whole model under full
weights (:mod:`fedzo.federation.transports.batched.fullrows`), its adapters under LoRA
(:mod:`fedzo.federation.transports.batched.rowstate`). Run block by block, a joint pass of
``G`` clients costs ``G`` calls of every trained layer: on a GPU, ``G`` kernel launches per
linear, which for 100 clients of SmolLM2-135M is about 21,000 launches a pass under full
weights (12,000 under LoRA of the attention's query and value projections), far more than
the arithmetic of 8-row blocks needs.

Here a round's group of clients keeps its copies *stacked*: one tensor of shape
``(G, *shape)`` per trainable tensor, client ``j``'s copy being its slice ``j``
(:func:`stack_states`; the same bytes as ``G`` separate copies). A joint pass then holds
whole clients, ``rows`` rows each, in slot order (consecutive slots, equal batch sizes:
:func:`pack_clients`), and while :func:`stacked_layers` is active each trained layer applies
every client's tensors to its block in one call (LoRA's adapters are linears: PEFT's layer
adds ``lora_B(lora_A(x)) * scaling`` to its frozen layer's output, each of the two one
batched matmul here):

* a linear: one batched matmul (``torch.bmm``) of the blocks with the stacked weights, plus
  the stacked biases;
* an embedding: one lookup in the stacked tables, each block's ids offset to its own table;
* an RMS norm whose only parameter is its scale (``*RMSNorm``), or a layer norm: the
  normalization of all blocks at once, each scaled (and shifted) by its own client's
  parameters, broadcast over the block.

Any other layer, and an input that is broadcast over the batch (a BERT encoder's position
ids, first dimension 1), runs block by block (:func:`~fedzo.federation.transports.batched.fullrows.blockwise`).
A block sees the same operations as in its client's own forward, grouped differently (a
batched matmul, a layer norm's affine step after its normalization), so the scores agree to
float32 rounding, as any joint pass (the engine's tolerance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, overload

import torch
import torch.nn.functional as F

from fedzo.federation.transports.batched.fullrows import blockwise, forwards_replaced, trained_layers
from fedzo.zo import ParamSet


@dataclass(frozen=True)
class Slot:
    """Where a client's copy of the trainable tensors lives: slice ``index`` of ``stacks``."""

    stacks: tuple[torch.Tensor, ...]  # one (G, *shape) tensor per trainable tensor, in work order
    index: int


def stack_states(tensors: Sequence[torch.Tensor], clients: int) -> tuple[torch.Tensor, ...]:
    """``clients`` copies of ``tensors``, stacked: one ``(clients, *shape)`` tensor per tensor."""
    out = []
    for t in tensors:
        s = torch.empty((clients, *t.shape), dtype=t.dtype, device=t.device)
        s.copy_(t.unsqueeze(0).expand_as(s))
        out.append(s)
    return tuple(out)


def slot_state(slot: Slot) -> tuple[torch.Tensor, ...]:
    """A client's own trainable tensors: views of its slice of the stacks."""
    return tuple(s[slot.index] for s in slot.stacks)


def pack_clients(sizes: Sequence[int], widths: Sequence[int], slots: Sequence[int], max_rows: int,
                 max_padding: float, max_tokens: float) -> list[list[int]]:
    """Requests (by index, in order) packed into passes of whole clients: consecutive requests
    whose slots are consecutive and whose batches hold equal numbers of rows, a pass closed
    when one more client would break a cap (``max_rows`` rows, padded tokens above ``1 +
    max_padding`` times what the clients' own batches pad to, more than ``max_tokens`` padded
    tokens). ``widths``: each request's widest row; every pass holds at least one client."""
    out: list[list[int]] = []
    for i, (n, w) in enumerate(zip(sizes, widths, strict=True)):
        if out:
            p = out[-1]
            j = p[-1]
            width = max(w, *(widths[k] for k in p))
            own = n * w + sum(sizes[k] * widths[k] for k in p)
            rows = n * (len(p) + 1)
            if (n == sizes[j] and slots[i] == slots[j] + 1 and rows <= max_rows
                    and rows * width <= min((1 + max_padding) * own, max_tokens)):
                p.append(i)
                continue
        out.append([i])
    return out


def _param(layer: torch.nn.Module, name: str, own: dict[str, int], stacks: Sequence[torch.Tensor],
           view: Sequence[int] | None = None) -> tuple[torch.Tensor | None, bool]:
    """The layer's parameter ``name``: the stacked clients' copies (``view``: their shape
    after the client dimension) when it trains, else the layer's own; whether stacked."""
    if name in own:
        s = stacks[own[name]]
        return (s if view is None else s.view(s.shape[0], *view)), True
    return getattr(layer, name), False


def _linear(layer: torch.nn.Linear, own: dict[str, int], stacks: Sequence[torch.Tensor],
            x: torch.Tensor, clients: int) -> torch.Tensor:
    weight, stacked = _param(layer, "weight", own, stacks)
    assert weight is not None
    xs = x.reshape(clients, -1, x.shape[-1])
    y = torch.bmm(xs, weight.transpose(1, 2)) if stacked else F.linear(xs, weight)
    bias, _ = _param(layer, "bias", own, stacks, (1, -1))
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def _embedding(layer: torch.nn.Embedding, own: dict[str, int], stacks: Sequence[torch.Tensor],
               x: torch.Tensor, clients: int) -> torch.Tensor:
    table = stacks[own["weight"]]
    vocab = table.shape[1]
    offsets = torch.arange(clients, device=x.device, dtype=x.dtype).mul_(vocab).unsqueeze(1)
    ids = x.reshape(clients, -1) + offsets
    return F.embedding(ids, table.reshape(clients * vocab, -1)).reshape(*x.shape, table.shape[-1])


def _scale(layer: torch.nn.Module, own: dict[str, int], stacks: Sequence[torch.Tensor],
           x: torch.Tensor, clients: int) -> torch.Tensor:
    """An RMS norm whose forward scales its normalized input by ``weight``: called on the
    blocks as one more leading dimension, with each client's scale broadcast over its block."""
    table: dict[str, Any] = layer._parameters
    weight = stacks[own["weight"]]
    xs = x.reshape(clients, -1, *x.shape[1:])
    saved = table["weight"]
    try:
        table["weight"] = weight.view(clients, *([1] * (xs.dim() - weight.dim())), *weight.shape[1:])
        y = type(layer).forward(layer, xs)
    finally:
        table["weight"] = saved
    return y.reshape(x.shape[0], *y.shape[2:])


def _layer_norm(layer: torch.nn.LayerNorm, own: dict[str, int], stacks: Sequence[torch.Tensor],
                x: torch.Tensor, clients: int) -> torch.Tensor:
    xs = x.reshape(clients, -1, *x.shape[1:])
    ones = [1] * (xs.dim() - 1 - len(layer.normalized_shape))
    y = F.layer_norm(xs, layer.normalized_shape, None, None, layer.eps)
    weight, _ = _param(layer, "weight", own, stacks, (*ones, *layer.normalized_shape))
    bias, _ = _param(layer, "bias", own, stacks, (*ones, *layer.normalized_shape))
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.reshape(x.shape)


Handler = Callable[[Any, dict[str, int], Sequence[torch.Tensor], torch.Tensor, int], torch.Tensor]


def handler(layer: torch.nn.Module, own: dict[str, int]) -> Handler | None:
    """How ``layer`` runs all blocks in one call (None: block by block)."""
    if type(layer) is torch.nn.Linear:
        return _linear
    if type(layer) is torch.nn.Embedding and layer.max_norm is None and "weight" in own:
        return _embedding
    if type(layer) is torch.nn.LayerNorm and layer.elementwise_affine:
        return _layer_norm
    names = {n for n, _ in layer.named_parameters(recurse=False)}
    if type(layer).__name__.endswith("RMSNorm") and names == {"weight"} and "weight" in own:
        return _scale
    return None


class _ClientViews(Sequence[torch.Tensor]):
    """Client ``j``'s trainable tensors as views of the stacks, each made when read: a layer
    run block by block reads only its own few, not every tensor of every client."""

    def __init__(self, stacks: Sequence[torch.Tensor], j: int) -> None:
        self.stacks, self.j = stacks, j

    def __len__(self) -> int:
        return len(self.stacks)

    @overload
    def __getitem__(self, k: int) -> torch.Tensor: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[torch.Tensor]: ...

    def __getitem__(self, k: int | slice) -> torch.Tensor | Sequence[torch.Tensor]:
        if isinstance(k, slice):
            return [s[self.j] for s in self.stacks[k]]
        return self.stacks[k][self.j]


def stacked_layers(classifier: torch.nn.Module, work: ParamSet, stacks: Sequence[torch.Tensor],
                 rows: int) -> AbstractContextManager[None]:
    """While active, a forward of ``classifier`` holds ``len(stacks[0])`` clients' blocks of
    ``rows`` rows each, in stack order, and every trained layer runs block ``j`` with
    ``stacks[k][j]`` in place of its trained tensor ``k`` (see the module doc)."""
    clients = stacks[0].shape[0]
    states = [_ClientViews(stacks, j) for j in range(clients)]
    patches = []
    for layer, own in trained_layers(classifier, work):
        loop = blockwise(layer, own, states, [rows] * clients)
        run = handler(layer, own)
        if run is None:
            patches.append((layer, loop))
            continue

        def forward(x: Any, *args: Any, _layer: torch.nn.Module = layer, _own: dict[str, int] = own,
                    _run: Handler = run, _loop: Callable[..., torch.Tensor] = loop, **kwargs: Any) -> torch.Tensor:
            if args or kwargs or not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] != clients * rows:
                return _loop(x, *args, **kwargs)  # broadcast over the batch, or called in another way
            return _run(_layer, _own, stacks, x, clients)

        patches.append((layer, forward))
    return forwards_replaced(patches)
