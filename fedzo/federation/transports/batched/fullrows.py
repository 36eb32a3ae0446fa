"""Per-row full weights in a joint forward: each block of rows runs through its own client's layers.

Full-parameter ZO with several local steps (or several directions updated one after
another) leaves every client with its own copy of the whole model. The batched engine's
``rows`` mode (:mod:`fedzo.federation.transports.batched`) still shares the parameter-free
work of a pass (attention, rotary positions, activations, masks, the pass's Python and
kernel launches) across the clients' rows: while :func:`per_row_full` is active, every
layer that owns trained parameters (a linear, an embedding, a norm) splits its input into
the pass's blocks of rows and runs its own class's ``forward`` on block ``i`` with client
``i``'s tensors in place of its parameters, then concatenates the blocks' outputs. Each
block thus sees exactly the operations its client's own forward applies to it.

Why a patch per layer rather than :func:`torch.func.vmap` over stacked client weights: a
joint pass holds blocks of different sizes (rows are sorted by length across clients, see
:mod:`fedzo.federation.transports.batched.joint`), which vmap cannot map without padding
every block to the largest; HF models branch on data while building their masks; and a
stacked copy of every client's weights would cost another model per client for each
pass. The per-layer patch needs no copy (a client's state tensors are used as they are, so
they may carry forward-mode tangents, as forward gradients need) and works for any module
whose trained parameters sit in leaf modules that take the batch first.

The engine keeps a group's copies stacked and runs whole clients per pass, where most layers
apply all the copies in one batched call (:mod:`fedzo.federation.transports.batched.stacked`);
the block-by-block forward here serves the layers and inputs that cannot (and the
forward-gradient passes, whose states are the tangents' dual tensors).

A layer's input whose first dimension is 1 rather than the pass's rows (a BERT encoder's
position embeddings, broadcast over the batch) gives every block its own client's output,
expanded to the block's rows: the values a client's own broadcast would add. Any other
shape is an error, and the engine then runs the round one client at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

from fedzo.zo import ParamSet

States = Sequence[Sequence[torch.Tensor]]  # per block of rows: the client's trainable tensors, in work order


def trained_layers(root: torch.nn.Module, work: ParamSet) -> list[tuple[torch.nn.Module, dict[str, int]]]:
    """The modules of ``root`` that own trained parameters, each with a map from its own
    parameter names to their index in ``work`` (tied weights map to one index)."""
    index = {t.data_ptr(): k for k, t in enumerate(work.tensors)}
    out = []
    for m in root.modules():
        own = {n: index[p.data_ptr()] for n, p in m.named_parameters(recurse=False) if p.data_ptr() in index}
        if own:
            out.append((m, own))
    return out


def full_reason(classifier: torch.nn.Module, work: ParamSet) -> str | None:
    """Why the rows of a joint pass cannot each use their own client's full weights (None: they can)."""
    layers = trained_layers(classifier, work)
    owned = {k for _, own in layers for k in own.values()}
    if len(owned) != len(work.tensors):
        return "some trained tensors are not parameters of the model's modules"
    nested = sorted({type(m).__name__ for m, _ in layers if next(m.children(), None) is not None})
    if nested:
        return f"trained parameters sit in modules with submodules ({', '.join(nested)}), not in leaf layers"
    renorm = sorted({type(m).__name__ for m, _ in layers if getattr(m, "max_norm", None) is not None})
    if renorm:
        return f"an embedding renormalizes its weights in place (max_norm: {', '.join(renorm)})"
    return None


def _blocks(x: Any, rows: Sequence[int], layer: torch.nn.Module) -> tuple[list[torch.Tensor], bool]:
    """A layer input split into the pass's blocks of rows, or repeated for each block when it
    is broadcast over the batch (first dimension 1); the flag says which."""
    total = sum(rows)
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise RuntimeError(f"{type(layer).__name__} got no batch-first tensor in a joint forward of {total} rows")
    if x.shape[0] == total:
        return list(x.split(list(rows))), False
    if x.shape[0] == 1:
        return [x] * len(rows), True
    raise RuntimeError(f"a joint forward of {total} rows met a {type(layer).__name__} input of {x.shape[0]}")


def _call_with(layer: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """``layer``'s own class forward on ``x`` with ``params`` in place of its parameters
    (swapped in its parameter table and back: hooks have run once for the whole pass)."""
    table: dict[str, Any] = layer._parameters  # holds plain tensors while swapped
    saved = {n: table[n] for n in params}
    try:
        table.update(params)  # plain (maybe dual) tensors; nn.Module reads them as it reads parameters
        return type(layer).forward(layer, x, *args, **kwargs)
    finally:
        table.update(saved)


@contextmanager
def forwards_replaced(patches: Sequence[tuple[torch.nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """While active, each module's ``forward`` is its patch (an instance attribute, deleted on exit)."""
    for module, forward in patches:
        setattr(module, "forward", forward)  # noqa: B010  # an instance attribute, deleted on exit
    try:
        yield
    finally:
        for module, _ in patches:
            del module.forward


def blockwise(layer: torch.nn.Module, own: dict[str, int], states: States,
              rows: Sequence[int]) -> Callable[..., torch.Tensor]:
    """A forward for ``layer`` that runs row block ``i`` of its input with ``states[i]``'s
    tensors in place of its trained parameters (``own``: their names and work indices)."""
    def forward(x: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        parts, broadcast = _blocks(x, rows, layer)
        outs = []
        for part, state, n in zip(parts, states, rows, strict=True):
            y = _call_with(layer, {name: state[k] for name, k in own.items()}, part, args, kwargs)
            outs.append(y.expand(n, *y.shape[1:]) if broadcast else y)
        return torch.cat(outs)

    return forward


def per_row_full(classifier: torch.nn.Module, work: ParamSet, states: States,
                 rows: Sequence[int]) -> AbstractContextManager[None]:
    """While active, every layer of ``classifier`` that owns trained parameters runs row block
    ``i`` with ``states[i]``'s tensors (see the module doc)."""
    return forwards_replaced([(layer, blockwise(layer, own, states, rows))
                              for layer, own in trained_layers(classifier, work)])
