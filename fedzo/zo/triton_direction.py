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

from fedzo.zo.noise import _GOLD, _M32, gaussian_table
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
    def _apply_kernel(w_ptr: Any, n: Any, start: Any, k0: Any, k1: Any, alphas_ptr: Any, table_ptr: Any,
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
        for j in tl.static_range(N_ALPHAS):
            a = tl.load(alphas_ptr + j)
            w = _to_weight_dtype(tl.fma(z, a, w.to(tl.float32)), dtype)
        tl.store(w_ptr + offs, w, mask=inside)


def stream_keys(seed: int, tensor_index: int) -> tuple[int, int]:
    """The two 32-bit words of tensor ``tensor_index``'s stream key for ``seed``: the low one
    and the golden-ratio multiple of the high one plus one (as the generator mixes them)."""
    key = derive_seed(seed, tensor_index)
    return key & _M32, (_GOLD * (((key >> 32) & _M32) + 1)) & _M32


def apply_fused(tensors: Sequence[torch.Tensor], seed: int, alphas: Sequence[float], *, gaussian: bool = True,
                indices: Sequence[int] | None = None, start: int = 0) -> None:
    """``t += a * z(seed)`` for each ``a`` in ``alphas``, in order, on every tensor (its
    index in the parameter set from ``indices``, default its position; its first element
    at position ``start`` of the tensor's stream, default 0), in place, one kernel launch per
    tensor."""
    if triton is None:
        raise RuntimeError("the fused direction kernel needs Triton (pip install triton)")
    if not alphas:
        return
    device = tensors[0].device
    table = gaussian_table(device)
    a = torch.tensor([float(x) for x in alphas], dtype=torch.float32, device=device)
    for pos, t in enumerate(tensors):
        if not t.is_contiguous():
            raise ValueError("the fused direction kernel needs contiguous tensors")
        k0, k1 = stream_keys(seed, pos if indices is None else indices[pos])
        n = t.numel()
        _apply_kernel[(triton.cdiv(n, BLOCK),)](t, n, start, k0, k1, a, table, N_ALPHAS=len(alphas), GAUSSIAN=gaussian,
                                               BLOCK=BLOCK)
