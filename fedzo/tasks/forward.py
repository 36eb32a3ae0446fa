"""The compiled forward of a classifier (``runtime.forward``) and the shape buckets that keep
its graphs few.

``eager`` (the default) runs the model as written, one kernel launch per operation: on a GPU
two forwards of SmolLM2-135M on 16 x 64 tokens take 60-83 ms, nearly all of it launches.
``compiled`` runs the classifier's scoring function through ``torch.compile(dynamic=False)``
(fused kernels); ``graphs`` through ``torch.compile(mode="reduce-overhead")``, which on CUDA
records each shape's kernels once as a CUDA graph (cudagraph trees) and then replays it with
one launch. On a CPU ``graphs`` compiles as ``compiled`` does: CUDA graphs need CUDA.

A compiled function is specialised to its input shapes, so a batch is padded before it goes
in: its width (tokens) and its rows each up to a bucket (:func:`bucket`: 16, 24, 32, 48, 64,
96, ... tokens; 1, 2, 3, 4, 6, 8, 12, 16, 24, ... rows), so that a run compiles a handful of
graphs rather than one per batch. Columns are added on the right (token ``pad_id``, mask 0)
whatever side the tokenizer pads on, so no real token moves: causal attention never looks
right, an encoder's attention and pooling skip masked keys, and the classifiers read each
row's answer position from its mask; a row's scores change by float rounding only (another
matrix shape may round differently). Added rows attend to their first token only, and their
scores are dropped.

Only forwards without autograd (``torch.no_grad``) and outside functorch transforms and
forward-mode AD take the compiled path (ZO losses, evaluation); backprop, forward gradients
and forwards that patch module code (the batched engine's per-row client state, under
:meth:`CompiledForward.eager`) run eager.

The compiled code reads the parameters where they live: a ZO step moves them in place (the
:class:`~fedzo.zo.perturb.Perturber` and every replay write into the parameters' own storage),
so each forward sees the current weights. Nothing may rebind a parameter's storage: a CUDA
graph would re-record, a changed dtype would recompile.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F

__all__ = ["FORWARD_MODES", "CompiledForward", "ForwardMode", "bucket", "compiled_shapes", "pad_to", "takes_compiled"]

ForwardMode = Literal["eager", "compiled", "graphs"]
FORWARD_MODES: tuple[ForwardMode, ...] = ("eager", "compiled", "graphs")
WIDTH_FLOOR = 16  # the narrowest width bucket, in tokens
RECOMPILE_LIMIT = 64  # graphs one compiled function may hold (torch's default, 8, is too few for joint passes)

Scores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids, attention_mask) -> (B, L)

_LIVE: weakref.WeakSet[CompiledForward] = weakref.WeakSet()


def bucket(n: int, floor: int = 1) -> int:
    """``n`` rounded up to a bucket: ``floor``, then the powers of two above it and three
    quarters of each (with ``floor`` 16: 16, 24, 32, 48, 64, 96, 128, ...): at most half as
    much again as ``n``, a third on average."""
    if n <= floor:
        return floor
    whole = 1 << (n - 1).bit_length()  # the smallest power of two >= n
    three_quarters = 3 * whole // 4
    return three_quarters if n <= three_quarters else whole


def bucket_shape(rows: int, width: int, max_width: int) -> tuple[int, int]:
    """The padded shape of a ``rows`` x ``width`` batch: both bucketed, the width no wider
    than ``max_width`` (the classifier's token limit) unless the batch already is."""
    return bucket(rows), min(bucket(width, WIDTH_FLOOR), max(width, max_width))


def pad_to(input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: int, width: int,
           pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (B, T) padded to (``rows``, ``width``): columns on
    the right (``pad_id``, mask 0), rows at the bottom (``pad_id``, attending to their first
    token only, so that every row's scores stay finite)."""
    b, t = input_ids.shape
    if (b, t) == (rows, width):
        return input_ids, attention_mask
    ids = F.pad(input_ids, (0, width - t, 0, rows - b), value=pad_id)
    mask = F.pad(attention_mask, (0, width - t, 0, rows - b), value=0)
    if rows > b:
        mask[b:, 0] = 1
    return ids, mask


def takes_compiled() -> bool:
    """Whether a forward called now may run compiled: no autograd recording, no functorch
    transform (``torch.func.jvp``, ``vmap``) and no forward-mode AD level active."""
    from torch.autograd import forward_ad

    return (not torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active()
            and forward_ad._current_level < 0)


class CompiledForward:
    """One classifier's scoring function, compiled per input shape, fed bucketed batches.

    ``shapes`` holds the (rows, width) shapes it has run (each one graph, or one CUDA graph);
    ``first_call_seconds`` the host seconds of the first call of each (compilation included).
    """

    def __init__(self, scores: Scores, mode: ForwardMode, *, pad_id: int, max_width: int) -> None:
        if mode == "eager":
            raise ValueError("CompiledForward needs mode 'compiled' or 'graphs'")
        self.scores = scores
        self.mode: ForwardMode = mode
        self.pad_id = pad_id
        self.max_width = max_width
        self.shapes: set[tuple[int, int]] = set()
        self.first_call_seconds = 0.0
        self._fns: dict[str, Any] = {}  # device type -> the compiled function
        self._eager_depth = 0
        _LIVE.add(self)

    def graphs_on(self, device: torch.device) -> bool:
        """Whether calls on ``device`` replay CUDA graphs (``graphs`` on CUDA)."""
        return self.mode == "graphs" and device.type == "cuda"

    def _compiled(self, device: torch.device) -> Any:
        fn = self._fns.get(device.type)
        if fn is None:
            mode = "reduce-overhead" if self.graphs_on(device) else None
            fn = self._fns[device.type] = torch.compile(self.scores, dynamic=False, mode=mode)
        return fn

    def serves(self) -> bool:
        """Whether a call now takes the compiled path (:func:`takes_compiled`, and not under
        :meth:`eager`)."""
        return self._eager_depth == 0 and takes_compiled()

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Calls inside run eager (forwards whose modules are patched per call)."""
        self._eager_depth += 1
        try:
            yield
        finally:
            self._eager_depth -= 1

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The scores (B, L) of the batch's rows, from its bucketed shape's compiled graph."""
        rows, width = input_ids.shape
        shape = bucket_shape(rows, width, self.max_width)
        ids, mask = pad_to(input_ids, attention_mask, *shape, self.pad_id)
        fn = self._compiled(ids.device)
        new = shape not in self.shapes
        t0 = time.perf_counter()
        graphs = self.graphs_on(ids.device)
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            out = fn(ids, mask)
        if new:
            self.shapes.add(shape)
            self.first_call_seconds += time.perf_counter() - t0
        out = out[:rows]
        return out.clone() if graphs else out  # a CUDA graph's outputs are overwritten by its next replay


def compiled_shapes() -> int | None:
    """The shapes (graphs) the compiled forwards alive in this process have run, summed;
    None where none is alive (every forward eager)."""
    live = list(_LIVE)
    return sum(len(c.shapes) for c in live) if live else None
