"""The portable generator compiled for the CPU in 32-bit lanes, and fused with the update.

:mod:`fedzo.zo.noise` holds the generator's 32-bit words in int64 lanes (masked after each
multiplication). A CPU without AVX-512 has no vector int64 multiply, so the compiled int64
kernel does not vectorise there. Here the same two rounds of the murmur3 finaliser run in
int32 lanes: the multiplications wrap modulo 2**32 (two's complement, the low word of the
product is the same signed or unsigned), and each logical right shift is an arithmetic
shift whose sign-extended high bits are masked off. torch.compile's C++ backend turns
these into ``at::vec::Vectorized<int32_t>`` loops (16 lanes with AVX-512, 8 with AVX2).

Two kernels, each one pass over its output:

* :func:`fill`: the direction's elements ``[start, start + n)`` written into a buffer (the
  chunked path of :class:`fedzo.zo.perturb.Perturber`, and :class:`fedzo.zo.noise.DirectionStream`).
* :func:`apply`: ``w += a * z`` for up to three alphas, regenerating ``z`` on the fly, with
  no direction buffer: each element is read and written once. Where a C compiler is at hand
  the same update is served by :mod:`fedzo.zo.native_lanes`' C kernel instead (inductor's
  code reads the Gaussian's table one lane at a time; the C kernel is about 3x faster), after
  the same bitwise probe.

Both are bitwise the eager generator and the chunked ``w.add_(z, alpha=a)``. torch's CPU
``add_`` is a fused multiply-add (one rounding); inductor's C++ code never contracts
``w + z * a`` into one (it compiles with ``-ffp-contract=off``), so :func:`apply` asks for
the FMA: a Rademacher ``z`` is +-1, so ``w + z * a`` has an exact product and one rounding;
a Gaussian uses inductor's own ``fma`` primitive (``fmadd`` on vector lanes, ``std::fma``
in scalar code). Each kernel first moves a probe of weights and must match ``add_``
bitwise; where it does not (a torch without the primitive, or torch.compile disabled, which
runs it eagerly as two roundings), the Gaussian kernel uses an exact emulation instead,
about 5x slower per element (:func:`fma_float32`: ``z`` times a float32 alpha is exact in
float64, the float64 sum is rounded to odd, its error from a two-sum setting the last bit,
and rounding that to float32 is the correctly rounded ``fma(z, a, w)``, as rounding to odd
with two spare bits makes the second rounding innocuous).

float32 weights only. ``add_`` on bfloat16 or float16 weights rounds the alpha to their
dtype too in its vectorised loop (then ``z * a`` is exact in float32 and one float32 addition
would do), but not in its scalar tail (a chunk's last ``n mod 32`` bf16 elements, on AVX2
and AVX-512 hosts alike, measured with torch 2.13), where the alpha stays a float32. A fused
kernel written with those casts still differed from the chunked update in 15-30 % of the
elements under inductor (not pursued), so half-precision weights keep the chunked path; its
buffer is filled by :func:`fill` only when it is float32.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from fedzo.zo.native_lanes import LanesKernel

MAX_ALPHAS = 3  # alphas one fused pass applies (more take further passes, which round alike)
FUSED_MIN_ELEMENTS = 1024  # smaller tensors take the chunked path (no compile for 1-element sizes)


def _signed32(v: int) -> int:
    """A 32-bit word as the int32 that holds its bits."""
    return v - (1 << 32) if v >= 1 << 31 else v


# the murmur3 finaliser's multipliers, as :mod:`fedzo.zo.noise` (which imports this module,
# so they are not imported from it) and the Triton kernel have them
_C1_32, _C2_32 = _signed32(0x85EBCA6B), _signed32(0xC2B2AE35)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The murmur3 finaliser on int32 lanes (wrapping multiplications, logical shifts as
    arithmetic shifts with the sign bits masked off)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _C1_32
    x = x ^ ((x >> 13) & 0x7FFFF)
    x = x * _C2_32
    return x ^ ((x >> 16) & 0xFFFF)


def direction(pos: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, table: torch.Tensor,
              gaussian: bool) -> torch.Tensor:
    """float32 z at the int64 stream positions ``pos`` for the key words ``k0``, ``k1``
    (int32 scalars): a Gaussian takes a 16-bit half of its pair's hash, a Rademacher sign
    one bit of its group of 32's hash, exactly as :func:`fedzo.zo.noise.portable_bits`."""
    group = pos >> (1 if gaussian else 5)
    h = mix32(mix32(group.to(torch.int32) ^ k0) ^ ((group >> 32).to(torch.int32) + k1))
    if gaussian:
        return table[(h >> ((pos & 1) * 16).to(torch.int32)) & 0xFFFF]
    return (((h >> (pos & 31).to(torch.int32)) & 1) * 2 - 1).to(torch.float32)


def fma_float32(z: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``fma(z, a, w)`` of float32 tensors, rounded once, from float64 operations: the
    product is exact, the sum is rounded to odd, then to float32."""
    w64, p = w.to(torch.float64), z.to(torch.float64) * a.to(torch.float64)
    s = w64 + p
    back = s - w64
    err = (w64 - (s - back)) + (p - back)  # s + err == w + p exactly (two-sum)
    bits = s.view(torch.int64)
    odd = torch.where((err > 0) == (s > 0), bits + 1, bits - 1)  # the neighbour towards w + p
    return torch.where((err != 0) & ((bits & 1) == 0), odd, bits).view(torch.float64).to(torch.float32)


def _positions(n: int, start: torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64, device=device) + start


def _own_code(fn: Callable[..., None], name: str) -> Callable[..., None]:
    """``fn`` with a code object of its own: torch.compile caches (and counts recompilations)
    per code object, so each variant gets its own cache rather than sharing one."""
    return types.FunctionType(fn.__code__.replace(co_name=name), fn.__globals__, name, fn.__defaults__,
                              fn.__closure__)


def _fill_kernel(gaussian: bool) -> Callable[..., None]:
    def kernel(out: torch.Tensor, start: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor,
               table: torch.Tensor) -> None:
        pos = _positions(out.shape[0], start, out.device)
        out.copy_(direction(pos, k0, k1, table, gaussian))
    return _own_code(kernel, f"fill_{'gaussian' if gaussian else 'rademacher'}")


def _inductor_fma() -> Callable[..., torch.Tensor] | None:
    """Inductor's fused multiply-add (``std::fma`` in the generated C++, ``fmadd`` on vector
    lanes: one rounding), or None where this torch has none."""
    try:
        from torch._inductor import inductor_prims
    except ImportError:  # pragma: no cover - depends on the torch build
        return None
    return getattr(inductor_prims, "fma", None)


def _apply_kernel(gaussian: bool, count: int, fma: Callable[..., torch.Tensor]) -> Callable[..., None]:
    def kernel(w: torch.Tensor, start: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor,
               table: torch.Tensor, alphas: torch.Tensor) -> None:
        pos = _positions(w.shape[0], start, w.device)
        z = direction(pos, k0, k1, table, gaussian)
        x = w
        for j in range(count):  # one rounding per alpha, in order, as add_(z, alpha=a) each
            x = fma(z, alphas[j], x) if gaussian else x + z * alphas[j]  # +-1: exact product
        w.copy_(x)
    name = "prim" if fma is not fma_float32 else "emulated"
    return _own_code(kernel, f"apply_{'gaussian' if gaussian else 'rademacher'}_{count}_{name}")


_KERNELS: dict[tuple[str, bool, int], Callable[..., None] | None] = {}
PROBE = 4096  # elements of the check an apply kernel passes before it serves (see _verified)


def _compiled(kind: str, gaussian: bool, count: int = 0,
              table: torch.Tensor | None = None) -> Callable[..., None] | None:
    """The compiled kernel (None once compiling or running it has failed). An apply kernel is
    the C kernel of :mod:`fedzo.zo.native_lanes` where it builds, else torch.compile's, which
    multiplies and adds with inductor's FMA where that compiles to one rounding (under
    ``TORCHDYNAMO_DISABLE`` it would run as two roundings), else with the exact float64
    emulation :func:`fma_float32`, about 5x slower per element; each is checked on a probe
    against ``add_`` before it serves."""
    key = (kind, gaussian, count)
    if key not in _KERNELS:
        _KERNELS[key] = None
        native: list[Callable[..., None]] = []
        if kind == "fill":
            candidates = [_fill_kernel(gaussian)]
        else:
            from fedzo.zo.native_lanes import kernel

            native = [k for k in (kernel(gaussian),) if k is not None]
            prim = _inductor_fma() if gaussian else None
            candidates = [_apply_kernel(gaussian, count, f) for f in (prim, fma_float32) if f is not None]
        for fn in [*native, *candidates]:
            try:
                kern = fn if fn in native else torch.compile(fn, dynamic=True, fullgraph=True)
                ok = kind == "fill" or table is None or _verified(kern, gaussian, count, table)
            except Exception:  # noqa: BLE001  # pragma: no cover - any compiler failure: the next, or chunked
                ok = False
            if ok:
                _KERNELS[key] = kern
                break
    return _KERNELS[key]


def _verified(kern: Callable[..., None], gaussian: bool, count: int, table: torch.Tensor) -> bool:
    """Whether ``kern`` moves ``PROBE`` weights bitwise as ``add_`` with the eager direction does."""
    words = (0x9E3779B9, 0x7F4A7C15)
    alphas = [0.7311, -2.5e-3, 3e-7][:count]
    w = torch.linspace(-3.0, 3.0, PROBE)
    want = _reference_update(w.clone(), words, 0, alphas, table, gaussian)
    with torch.no_grad():
        kern(w, *_scalars(words, 0, w.device), table, torch.tensor(alphas, dtype=torch.float32))
    return torch.equal(w.view(torch.int32), want.view(torch.int32))


def _reference_update(w: torch.Tensor, words: tuple[int, int], start: int, alphas: Sequence[float],
                      table: torch.Tensor, gaussian: bool) -> torch.Tensor:
    """``w`` moved by ``add_`` of the eager direction from ``start``, alpha after alpha (what a
    kernel's probe must match bitwise)."""
    st, k0, k1 = _scalars(words, start, w.device)
    z = direction(_positions(w.numel(), st, w.device), k0, k1, table, gaussian)
    for a in alphas:
        w.add_(z, alpha=a)
    return w


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-d tensor over ``t``'s (contiguous) elements that is not a view: torch.compile
    guards a view's base, so views of differently shaped tensors (a chunk of a buffer, a
    flattened matrix) would each compile anew."""
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(),
                                                                (t.numel(),), (1,))


def _scalars(words: tuple[int, int], start: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The start position and the key's two words as 0-d tensors (no recompilation per value)."""
    return (torch.full((), start, dtype=torch.int64, device=device),
            torch.full((), _signed32(words[0]), dtype=torch.int32, device=device),
            torch.full((), _signed32(words[1]), dtype=torch.int32, device=device))


def fill(words: tuple[int, int], start: int, out: torch.Tensor, table: torch.Tensor, gaussian: bool) -> bool:
    """Write the portable direction's elements ``[start, start + len(out))`` for the stream
    key whose words (:func:`fedzo.zo.noise.key_words`) are ``words`` into the contiguous
    float32 ``out`` (``table``: :func:`fedzo.zo.noise.gaussian_table`); False (nothing
    written) where the compiled kernel is not available, which then stays so."""
    kern = _compiled("fill", gaussian)
    if kern is None:
        return False
    try:
        with torch.no_grad():
            kern(_flat(out), *_scalars(words, start, out.device), table)
    except Exception:  # noqa: BLE001  # compiled lazily: no C compiler...
        _KERNELS[("fill", gaussian, 0)] = None
        return False
    return True


def eligible(t: torch.Tensor) -> bool:
    """Whether :func:`apply` serves ``t``: a contiguous float32 CPU tensor, of at least
    ``FUSED_MIN_ELEMENTS`` elements unless the C kernel serves (torch.compile would compile
    the smallest sizes anew; the C kernel takes any size, so norms and biases skip the chunked
    path's per-call overhead too). Half-precision weights take the chunked path (see the
    module's notes)."""
    from fedzo.zo.native_lanes import library

    if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() or t.numel() == 0:
        return False
    return t.numel() >= FUSED_MIN_ELEMENTS or library() is not None  # apply() checks the C kernel serves


def apply(words: tuple[int, int], w: torch.Tensor, alphas: Sequence[float], table: torch.Tensor, gaussian: bool,
          start: int = 0) -> int:
    """``w += a * z`` for each ``a`` of ``alphas`` in order, ``z`` the portable direction of
    the stream key whose words are ``words`` from position ``start`` (as :func:`fill`), in one pass over ``w`` per ``MAX_ALPHAS``
    alphas. Returns how many alphas it applied: all, or fewer where a compiled kernel is not
    available (the caller applies the rest)."""
    from fedzo.zo.native_lanes import LanesKernel

    flat = _flat(w)
    scalars = _scalars(words, start, w.device)
    done = 0
    while done < len(alphas):
        part = alphas[done:done + MAX_ALPHAS]
        kern = _compiled("apply", gaussian, len(part), table)
        if kern is None or (flat.numel() < FUSED_MIN_ELEMENTS and not isinstance(kern, LanesKernel)):
            break
        try:
            with torch.no_grad():
                kern(flat, *scalars, table, torch.tensor(list(part), dtype=torch.float32))
        except Exception:  # noqa: BLE001  # compiled lazily (before it writes): no C compiler...
            _KERNELS[("apply", gaussian, len(part))] = None
            break
        done += len(part)
    return done


_TABLE_READY: dict[bool, bool] = {}  # per distribution: the C kernel's table call passed its probe


def _table_verified(kern: LanesKernel, gaussian: bool, table: torch.Tensor) -> bool:
    """Whether the C kernel's table call moves a probe of three tensors (one crossing a block
    boundary, one of a single element) under two entries bitwise as ``add_`` one entry after
    the other does."""
    sizes, starts = (PROBE + 3, 1, 70_001), (5, 0, 31)
    entries = [((0x9E3779B9, 0x7F4A7C15), (0.7311, -2.5e-3)), ((0x1B873593, 0xCC9E2D51), (3e-7,))]
    ws = [torch.linspace(-3.0, 3.0, n) for n in sizes]
    want = [w.clone() for w in ws]
    keys = [[(words[0] ^ s, words[1] + e) for s in range(len(ws))] for e, (words, _) in enumerate(entries)]
    for row, (_, alphas) in zip(keys, entries, strict=True):
        for w, pair, start in zip(want, row, starts, strict=True):
            _reference_update(w, pair, start, alphas, table, gaussian)
    kern.apply_table(ws, keys, [a for _, a in entries], table, starts)
    return all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(ws, want, strict=True))


def _overlap(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether any two of the (contiguous) tensors share memory."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for t in tensors)
    return any(nxt[0] < cur[1] for cur, nxt in pairwise(spans))


def apply_entries(tensors: Sequence[torch.Tensor], entries: Sequence[tuple[Sequence[tuple[int, int]], Sequence[float]]],
                  table: torch.Tensor, gaussian: bool) -> bool:
    """Every entry's ``w += a * z`` over every tensor, in the order of the entries and their
    alphas, in one call of the C kernel (:meth:`fedzo.zo.native_lanes.LanesKernel.apply_table`):
    an entry is the key words of its direction on each tensor (:func:`apply`'s ``words``,
    one pair per tensor) and its alphas. One pass over the weights however many entries, the
    bits those of :func:`apply` per entry and tensor. False, and nothing applied, where it does
    not serve: no C kernel, its probe failed, a tensor that :func:`eligible` refuses, or tensors
    whose memory overlaps (their elements would be updated in another order, concurrently)."""
    from fedzo.zo.native_lanes import kernel

    if not tensors or not all(eligible(t) for t in tensors) or _overlap(tensors):
        return False
    kern = kernel(gaussian)
    if kern is None:
        return False
    if gaussian not in _TABLE_READY:
        try:
            with torch.no_grad():
                _TABLE_READY[gaussian] = _table_verified(kern, gaussian, table)
        except Exception:  # noqa: BLE001  # pragma: no cover - a failing library: the per-tensor paths
            _TABLE_READY[gaussian] = False
    if not _TABLE_READY[gaussian]:
        return False
    keys, alphas = [], []
    for words, entry_alphas in entries:
        for j in range(0, len(entry_alphas), MAX_ALPHAS):  # more than three: further entries, same order
            keys.append(words)
            alphas.append(list(entry_alphas[j:j + MAX_ALPHAS]))
    if alphas:
        try:
            with torch.no_grad():
                kern.apply_table(tensors, keys, alphas, table)
        except ValueError:  # refused before writing anything: the per-tensor paths serve from now on
            _TABLE_READY[gaussian] = False
            return False
    return True
