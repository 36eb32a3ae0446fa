"""The portable direction regenerated and applied in one fused Triton kernel.

``theta += a * z(seed)`` for each ``a`` of a step's alphas, in one pass over each trainable
tensor: every program computes the portable generator's bits for its block of elements
(the same two rounds of the 32-bit murmur3 finaliser over the counter as
:mod:`fedzo.zo.noise`, here in uint32 lanes, where the multiplications wrap as the masked
int64 ones do), maps them to a Rademacher sign or a Gaussian quantile from the same
65,536-entry float32 table, and applies the alphas in order, rounding to the weights' dtype
after each one, as :meth:`fedzo.zo.perturb.Perturber.apply` does. No direction buffer, no
chunk loop, no host synchronisation: one launch per tensor.

The values of ``z`` are bitwise those of the CPU generator (the known-answer vectors check
it, with ``TRITON_INTERPRET=1`` on a CPU). A half-precision ``z`` is the table value rounded
to the weights' dtype first, as the CPU's buffer of that dtype holds it.

Triton is optional: :func:`available` says whether it imports (the GPU machines have it; on
a CPU, tests run the kernel under Triton's interpreter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedzo.zo.noise import gaussian_table, key_words
from fedzo.zo.seeds import derive_seed

BLOCK = 1024

try:  # pragma: no cover - depends on the environment
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None
    tl = None


def available() -> bool:
    """Whether Triton imports here."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _mix32(x: Any) -> Any:
        """The murmur3 finaliser on uint32 lanes."""
        x = x ^ (x >> 16)
        x = x * 0x85EBCA6B
        x = x ^ (x >> 13)
        x = x * 0xC2B2AE35
        return x ^ (x >> 16)

    @triton.jit
    def _to_weight_dtype(x: Any, dtype: tl.constexpr) -> Any:
        """float32 to the weights' dtype, rounding to nearest even (bfloat16 by its bits, so
        that Triton's interpreter, which truncates, rounds as a GPU and the CPU do)."""
        if dtype == tl.bfloat16:
            u = x.to(tl.uint32, bitcast=True)
            u = u + 0x7FFF + ((u >> 16) & 1)
            return (u >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
        else:
            return x.to(dtype)

    @triton.jit
    def _apply_kernel(w_ptr: Any, n: Any, start: Any, k0: Any, k1: Any, a0: Any, a1: Any, a2: Any, table_ptr: Any,
                      N_ALPHAS: tl.constexpr, GAUSSIAN: tl.constexpr, BLOCK: tl.constexpr) -> None:
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < n
        element = offs + start  # the element's position in its tensor's stream
        if GAUSSIAN:
            group = element // 2
        else:
            group = element // 32
        lo = (group & 0xFFFFFFFF).to(tl.uint32)
        hi = (group >> 32).to(tl.uint32)
        x = _mix32(lo ^ k0.to(tl.uint32))
        h = _mix32(x ^ (hi + k1.to(tl.uint32)))
        if GAUSSIAN:
            half = (h >> ((element % 2) * 16).to(tl.uint32)) & 0xFFFF
            z = tl.load(table_ptr + half.to(tl.int32), mask=inside, other=0.0)
        else:
            bit = (h >> (element % 32).to(tl.uint32)) & 1
            z = bit.to(tl.float32) * 2.0 - 1.0
        w = tl.load(w_ptr + offs, mask=inside, other=0.0)
        dtype = w_ptr.dtype.element_ty
        z = _to_weight_dtype(z, dtype).to(tl.float32)  # the CPU buffer holds z in the weights' dtype
        w = _to_weight_dtype(tl.fma(z, a0, w.to(tl.float32)), dtype)
        if N_ALPHAS > 1:
            w = _to_weight_dtype(tl.fma(z, a1, w.to(tl.float32)), dtype)
        if N_ALPHAS > 2:
            w = _to_weight_dtype(tl.fma(z, a2, w.to(tl.float32)), dtype)
        tl.store(w_ptr + offs, w, mask=inside)


def apply_fused(tensors: Sequence[torch.Tensor], seed: int, alphas: Sequence[float], *, gaussian: bool = True,
                indices: Sequence[int] | None = None, start: int = 0) -> None:
    """``t += a * z(seed)`` for each ``a`` in ``alphas``, in order, on every tensor (its
    index in the parameter set from ``indices``, default its position; its first element
    at position ``start`` of the tensor's stream, default 0), in place, one kernel launch per
    tensor and up to three alphas (passed as scalars: no copy from the host to wait for;
    more alphas take further launches, in order, which round alike)."""
    if triton is None:
        raise RuntimeError("the fused direction kernel needs Triton (pip install triton)")
    if not alphas:
        return
    table = gaussian_table(tensors[0].device)
    for pos, t in enumerate(tensors):
        if not t.is_contiguous():
            raise ValueError("the fused direction kernel needs contiguous tensors")
        k0, k1 = key_words(derive_seed(seed, pos if indices is None else indices[pos]))
        n = t.numel()
        for i in range(0, len(alphas), 3):
            part = [float(x) for x in alphas[i:i + 3]]
            a0, a1, a2 = (part + [0.0, 0.0])[:3]
            _apply_kernel[(triton.cdiv(n, BLOCK),)](t, n, start, k0, k1, a0, a1, a2, table, N_ALPHAS=len(part),
                                                   GAUSSIAN=gaussian, BLOCK=BLOCK)
