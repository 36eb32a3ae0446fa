"""The portable direction regenerated and applied in one fused Triton kernel.

``theta += a * z(seed)`` for each ``a`` of a step's alphas, in one pass over each trainable
tensor: every program computes the portable generator's bits for its block of elements
(the same two rounds of the 32-bit murmur3 finaliser over the counter as
:mod:`fedzo.zo.noise`, here in uint32 lanes, where the multiplications wrap as the masked
int64 ones do), maps them to a Rademacher sign or a Gaussian quantile from the same
65,536-entry float32 table, and applies the alphas in order, rounding to the weights' dtype
after each one, as :meth:`fedzo.zo.perturb.Perturber.apply` does (each alpha rounded to a
half-precision tensor's dtype first, as its ``add_`` rounds it: :func:`alpha_in`). No direction buffer, no
chunk loop, no host synchronisation: one launch for all the tensors of one dtype. A
segment table (:class:`Segments`: each tensor's address, length and first block, and each
block's tensor) is built once per set of tensors and cached on their device; each tensor's
stream key, ``derive_seed(seed, index)``, is derived in the kernel from the seed passed as a
scalar, so an application copies nothing from the host.

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

from fedzo.zo.noise import gaussian_table
from fedzo.zo.seeds import MASK64, PATH_OFFSET
from fedzo.zo.seeds import splitmix64 as _splitmix64_int

BLOCK = 1024
ENTRIES_PER_PASS = 16  # replayed entries a pass over the weights applies (one read and write each)

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
    def _splitmix64(x: Any) -> Any:
        """SplitMix64 on uint64 lanes (the multiplications wrap, as in :mod:`fedzo.zo.seeds`)."""
        x = x + 0x9E3779B97F4A7C15
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB
        return x ^ (x >> 31)

    @triton.jit
    def _direction(seed_mix: Any, index_mix: Any, element: Any, inside: Any, table_ptr: Any, DTYPE: tl.constexpr,
                   GAUSSIAN: tl.constexpr) -> Any:
        """z at stream positions ``element`` of the tensor whose index mixes to ``index_mix``,
        for the seed that mixes to ``seed_mix``, in the weights' dtype (as float32)."""
        # the tensor's stream key, derive_seed(seed, index): splitmix(splitmix(seed) ^ splitmix(index + C))
        key = _splitmix64(seed_mix.to(tl.uint64, bitcast=True) ^ index_mix.to(tl.uint64, bitcast=True))
        key = key & 0x7FFFFFFFFFFFFFFF
        k0 = (key & 0xFFFFFFFF).to(tl.uint32)
        k1 = (0x9E3779B9 * ((key >> 32) + 1)).to(tl.uint32)  # noise.key_words, wrapped to 32 bits
        if GAUSSIAN:
            group = element // 2
        else:
            group = element // 32
        lo = (group & 0xFFFFFFFF).to(tl.uint32)
        hi = (group >> 32).to(tl.uint32)
        x = _mix32(lo ^ k0)
        h = _mix32(x ^ (hi + k1))
        if GAUSSIAN:
            half = (h >> ((element % 2) * 16).to(tl.uint32)) & 0xFFFF
            z = tl.load(table_ptr + half.to(tl.int32), mask=inside, other=0.0)
        else:
            bit = (h >> (element % 32).to(tl.uint32)) & 1
            z = bit.to(tl.float32) * 2.0 - 1.0
        return _to_weight_dtype(z, DTYPE).to(tl.float32)  # the CPU buffer holds z in the weights' dtype

    @triton.jit
    def _apply_kernel(addr_ptr: Any, numel_ptr: Any, first_ptr: Any, index_mix_ptr: Any, segment_ptr: Any,
                      start: Any, seed_mix: Any, a0: Any, a1: Any, a2: Any, table_ptr: Any, DTYPE: tl.constexpr,
                      N_ALPHAS: tl.constexpr, GAUSSIAN: tl.constexpr, BLOCK: tl.constexpr) -> None:
        pid = tl.program_id(0)
        seg = tl.load(segment_ptr + pid)  # which tensor this block of elements belongs to
        w_ptr = tl.load(addr_ptr + seg).to(tl.pointer_type(DTYPE))
        offs = (pid - tl.load(first_ptr + seg)) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < tl.load(numel_ptr + seg)
        z = _direction(seed_mix, tl.load(index_mix_ptr + seg), offs + start, inside, table_ptr, DTYPE, GAUSSIAN)
        w = tl.load(w_ptr + offs, mask=inside, other=0.0)
        w = _to_weight_dtype(tl.fma(z, a0, w.to(tl.float32)), DTYPE)
        if N_ALPHAS > 1:
            w = _to_weight_dtype(tl.fma(z, a1, w.to(tl.float32)), DTYPE)
        if N_ALPHAS > 2:
            w = _to_weight_dtype(tl.fma(z, a2, w.to(tl.float32)), DTYPE)
        tl.store(w_ptr + offs, w, mask=inside)

    @triton.jit
    def _entries_kernel(addr_ptr: Any, numel_ptr: Any, first_ptr: Any, index_mix_ptr: Any, segment_ptr: Any,
                        seed_mix_ptr: Any, count_ptr: Any, alphas_ptr: Any, base: Any, table_ptr: Any,
                        DTYPE: tl.constexpr, GAUSSIAN: tl.constexpr, ENTRIES: tl.constexpr,
                        BLOCK: tl.constexpr) -> None:
        """Entries ``base .. base + ENTRIES - 1`` (each with up to three alphas, ``count_ptr[e]``
        of them at ``alphas_ptr[3 e]``; padding rows have none), entry after entry, on each
        element: loaded once, stored once, rounded to the weights' dtype after each alpha
        exactly as one application per entry. The loops are unrolled (a compile-time count):
        no runtime loop bound, which Triton's interpreter cannot take from an argument."""
        pid = tl.program_id(0)
        seg = tl.load(segment_ptr + pid)
        w_ptr = tl.load(addr_ptr + seg).to(tl.pointer_type(DTYPE))
        offs = (pid - tl.load(first_ptr + seg)) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        inside = offs < tl.load(numel_ptr + seg)
        index_mix = tl.load(index_mix_ptr + seg)
        w = tl.load(w_ptr + offs, mask=inside, other=0.0)
        for e in tl.static_range(ENTRIES):
            row = base + e
            z = _direction(tl.load(seed_mix_ptr + row), index_mix, offs, inside, table_ptr, DTYPE, GAUSSIAN)
            count = tl.load(count_ptr + row)
            for j in tl.static_range(3):
                moved = _to_weight_dtype(tl.fma(z, tl.load(alphas_ptr + 3 * row + j), w.to(tl.float32)), DTYPE)
                w = tl.where(j < count, moved, w)
        tl.store(w_ptr + offs, w, mask=inside)

    _TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _signed64(x: int) -> int:
    """A 64-bit word as the signed int a kernel argument or an int64 tensor holds."""
    return x - (1 << 64) if x >= 1 << 63 else x


class Segments:
    """The table one launch reads to find its tensors: for each tensor its address, length,
    first block and index mix (``splitmix(index + C)`` of :func:`fedzo.zo.seeds.derive_seed`),
    and for each block its tensor. Built once per set of tensors and kept on their device."""

    def __init__(self, tensors: Sequence[torch.Tensor], indices: Sequence[int]) -> None:
        device = tensors[0].device
        blocks = [triton.cdiv(t.numel(), BLOCK) for t in tensors]
        firsts = [sum(blocks[:i]) for i in range(len(blocks))]
        def as64(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=device)

        self.addr = as64([t.data_ptr() for t in tensors])
        self.numel = as64([t.numel() for t in tensors])
        self.first = as64(firsts)
        self.index_mix = as64([_signed64(_splitmix64_int((i & MASK64) + PATH_OFFSET)) for i in indices])
        self.segment = torch.repeat_interleave(torch.arange(len(tensors), dtype=torch.int32),
                                               torch.tensor(blocks)).to(device)
        self.blocks = sum(blocks)
        self.torch_dtype = tensors[0].dtype
        self.dtype = _TL_DTYPES[self.torch_dtype]


_SEGMENTS: dict[tuple[tuple[int, int, int], ...], Segments] = {}
_MAX_TABLES = 32


def segments(tensors: Sequence[torch.Tensor], indices: Sequence[int]) -> Segments:
    """The segment table of ``tensors`` (one dtype, one device), from a small cache keyed by
    their addresses, lengths and indices."""
    key = tuple((t.data_ptr(), t.numel(), i) for t, i in zip(tensors, indices, strict=True))
    table = _SEGMENTS.get(key)
    if table is None:
        if len(_SEGMENTS) >= _MAX_TABLES:
            _SEGMENTS.pop(next(iter(_SEGMENTS)))
        table = _SEGMENTS[key] = Segments(tensors, indices)
    return table


def _tables(tensors: Sequence[torch.Tensor], indices: Sequence[int] | None) -> list[Segments]:
    """One segment table per dtype among the non-empty ``tensors`` (their indices in the
    parameter set from ``indices``, default their positions)."""
    positions = list(range(len(tensors))) if indices is None else list(indices)
    groups: dict[torch.dtype, list[int]] = {}
    for pos, t in enumerate(tensors):
        if t.numel():
            groups.setdefault(t.dtype, []).append(pos)
    return [segments([tensors[p] for p in members], [positions[p] for p in members]) for members in groups.values()]


def alpha_in(dtype: torch.dtype, alphas: list[float]) -> list[float]:
    """The alphas as ``Tensor.add_(z, alpha=a)`` applies them to weights of ``dtype``: a
    bfloat16 or float16 tensor's ``add_`` rounds ``a`` to that dtype first (then ``z * a`` is
    exact in float32 and the kernel's FMA rounds as the CPU's float32 arithmetic); float32
    weights take ``a`` as a float32. The rounding goes through float32, as c10's conversion
    of a double scalar to a half type does."""
    if dtype == torch.float32:
        return alphas
    return torch.tensor(alphas, dtype=torch.float32).to(dtype).to(torch.float32).tolist()


def apply_fused(tensors: Sequence[torch.Tensor], seed: int, alphas: Sequence[float], *, gaussian: bool = True,
                indices: Sequence[int] | None = None, start: int = 0) -> None:
    """``t += a * z(seed)`` for each ``a`` in ``alphas``, in order, on every tensor (its
    index in the parameter set from ``indices``, default its position; its first element
    at position ``start`` of the tensor's stream, default 0), in place: one kernel launch
    for all tensors of one dtype and up to three alphas (passed as scalars with the seed:
    nothing is copied from the host and nothing waits; more alphas take further launches, in
    order, which round alike). Each tensor's stream key is derived in the kernel."""
    if triton is None:
        raise RuntimeError("the fused direction kernel needs Triton (pip install triton)")
    if not alphas or not tensors:
        return
    if any(not t.is_contiguous() for t in tensors):
        raise ValueError("the fused direction kernel needs contiguous tensors")
    table = gaussian_table(tensors[0].device)
    seed_mix = _signed64(_splitmix64_int(seed & MASK64))
    for seg in _tables(tensors, indices):
        for i in range(0, len(alphas), 3):
            part = alpha_in(seg.torch_dtype, [float(x) for x in alphas[i:i + 3]])
            a0, a1, a2 = (part + [0.0, 0.0])[:3]
            _apply_kernel[(seg.blocks,)](seg.addr, seg.numel, seg.first, seg.index_mix, seg.segment, start, seed_mix,
                                         a0, a1, a2, table, DTYPE=seg.dtype, N_ALPHAS=len(part), GAUSSIAN=gaussian,
                                         BLOCK=BLOCK)


def apply_entries_fused(tensors: Sequence[torch.Tensor], entries: Sequence[tuple[int, Sequence[float]]], *,
                        gaussian: bool = True, indices: Sequence[int] | None = None) -> None:
    """``t += a * z(seed)`` for every ``(seed, alphas)`` of ``entries`` and each ``a`` of its
    alphas, in that order, on every tensor, ``ENTRIES_PER_PASS`` entries a pass over the
    weights (one launch per dtype and pass): each element is read once, moved entry after
    entry with a rounding after each alpha, and written once, so the result is bitwise that
    of one :func:`apply_fused` per entry (a replayed log stays the log it was). The entries'
    seeds and alphas travel to the device in one copy."""
    if triton is None:
        raise RuntimeError("the fused direction kernel needs Triton (pip install triton)")
    # at most three alphas a row: an entry with more continues on the next row, with the same seed
    rows = [(seed, [float(a) for a in alphas[i:i + 3]]) for seed, alphas in entries for i in range(0, len(alphas), 3)]
    if not rows or not tensors:
        return
    per_pass = min(ENTRIES_PER_PASS, 1 << (len(rows) - 1).bit_length())  # a power of two: few compilations
    rows += [(0, [])] * (-len(rows) % per_pass)  # padding rows move nothing
    if any(not t.is_contiguous() for t in tensors):
        raise ValueError("the fused direction kernel needs contiguous tensors")
    device = tensors[0].device
    table = gaussian_table(device)
    seed_mix = torch.tensor([_signed64(_splitmix64_int(seed & MASK64)) for seed, _ in rows], dtype=torch.int64)
    counts = torch.tensor([len(part) for _, part in rows], dtype=torch.int32)
    alphas = torch.tensor([(part + [0.0, 0.0, 0.0])[:3] for _, part in rows], dtype=torch.float32)
    seed_mix, counts, alphas = (x.to(device) for x in (seed_mix, counts, alphas))
    for seg in _tables(tensors, indices):
        rounded = alphas.to(seg.torch_dtype).to(torch.float32)  # as alpha_in: add_ rounds alpha to the weights' dtype
        for base in range(0, len(rows), per_pass):
            _entries_kernel[(seg.blocks,)](seg.addr, seg.numel, seg.first, seg.index_mix, seg.segment, seed_mix,
                                           counts, rounded, base, table, DTYPE=seg.dtype, GAUSSIAN=gaussian,
                                           ENTRIES=per_pass, BLOCK=BLOCK)
