"""Direction generators: a seed and a position give a chunk of a random direction.

Directions are never stored. ``fill(seed, tensor_index, start, out)`` writes the
elements ``[start, start + out.numel())`` of tensor ``tensor_index``'s slice of the
direction for ``seed`` into ``out``; callers walk tensors in chunks so extra memory
is one chunk.

Two generators:

* ``torch``: the framework generator (Philox on CUDA, MT19937 on CPU), one
  ``torch.Generator`` per tensor seeded from ``derive_seed(seed, tensor_index)``,
  consumed chunk after chunk. Fast, but CPU and CUDA give different streams, and the
  stream depends on the chunk size (part of the spec).
* ``portable``: counter-based. Element ``i`` of tensor ``k`` is a hash of
  ``(seed, k, i)`` (two rounds of a 32-bit avalanche mix over 64-bit integer lanes),
  mapped to a Rademacher sign or, via the inverse normal CDF, a Gaussian. Integer work
  is exact everywhere, so the same seed gives the same direction on any device and for
  any chunk size, up to the rounding of the final float transform.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from fedzo.errors import ConfigError
from fedzo.zo.seeds import derive_seed

_M32 = 0xFFFFFFFF
_C1 = 0x85EBCA6B
_C2 = 0xC2B2AE35
_GOLD = 0x9E3779B9


class GeneratorKind(str, enum.Enum):
    """Which pseudo-random stream produces directions."""

    TORCH = "torch"
    PORTABLE = "portable"


class Distribution(str, enum.Enum):
    """Distribution of each direction element (unit variance)."""

    GAUSSIAN = "gaussian"
    RADEMACHER = "rademacher"


GeneratorName = Literal["portable", "torch"]
"""The string form of a :class:`GeneratorKind` (as configuration files spell it)."""

DistributionName = Literal["gaussian", "rademacher"]
"""The string form of a :class:`Distribution` (as configuration files spell it)."""

_E = TypeVar("_E", bound=enum.Enum)


def _enum(cls: type[_E], value: object, what: str) -> _E:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(f"{what}: {value!r} is not known; allowed: {allowed}") from None


@dataclass(frozen=True, init=False)
class NoiseSpec:
    """How directions are generated. Server and clients must share it exactly.

    ``generator`` and ``distribution`` may be given as their enum or its string value;
    the attributes always hold the enum.
    """

    generator: GeneratorKind
    distribution: Distribution
    chunk_size: int

    def __init__(
        self,
        generator: GeneratorKind | GeneratorName = GeneratorKind.PORTABLE,
        distribution: Distribution | DistributionName = Distribution.GAUSSIAN,
        chunk_size: int = 1 << 20,
    ) -> None:
        object.__setattr__(self, "generator", _enum(GeneratorKind, generator, "generator"))
        object.__setattr__(self, "distribution", _enum(Distribution, distribution, "distribution"))
        object.__setattr__(self, "chunk_size", chunk_size)
        if not isinstance(chunk_size, int) or chunk_size < 1024 or chunk_size % 32:
            raise ConfigError(
                f"chunk_size: {chunk_size!r} is not allowed; use a multiple of 32 >= 1024"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for logs and messages)."""
        return {
            "generator": self.generator.value,
            "distribution": self.distribution.value,
            "chunk_size": self.chunk_size,
        }


# --------------------------------------------------------------------------- portable
# Rademacher: one 32-bit hash per group of 32 elements, one sign per bit.
# Gaussian: one 32-bit hash per pair of elements, each 16-bit half indexes a table of
# the 65,536 standard-normal quantiles at (k + 0.5) / 65536 (a discretised Gaussian,
# |z| <= 4.3). The table is computed once on the CPU in float64, so every device gets
# identical values: the whole map from (seed, index) to z is exact integer work plus a
# lookup, bitwise the same on CPU and CUDA and for any chunking.
_RADEMACHER_GROUP = 32
_GAUSSIAN_GROUP = 2


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """32-bit avalanche (murmur3 finaliser) on int64 lanes holding values < 2**32."""
    x = x ^ (x >> 16)
    x = (x * _C1) & _M32
    x = x ^ (x >> 13)
    x = (x * _C2) & _M32
    return x ^ (x >> 16)


def key_words(key: int) -> tuple[int, int]:
    """The two 32-bit words a stream key enters the hash as: its low word, and the
    golden-ratio multiple of its high word plus one."""
    return key & _M32, (_GOLD * (((key >> 32) & _M32) + 1)) & _M32


def portable_bits(key: int, start: int, n: int, device: torch.device) -> torch.Tensor:
    """32 random bits (in int64 lanes) for counter values ``start .. start+n-1``.

    Pure integer arithmetic, identical on every device. ``key`` is a 63-bit stream key.
    """
    k0, k1 = key_words(key)
    idx = torch.arange(start, start + n, dtype=torch.int64, device=device)
    x = _mix32((idx & _M32) ^ k0)
    return _mix32(x ^ (((idx >> 32) + k1) & _M32))


_TABLES: dict[torch.device, torch.Tensor] = {}


def gaussian_table(device: torch.device) -> torch.Tensor:
    """The 65,536 standard-normal quantiles used by the portable Gaussian (float32)."""
    dev = torch.device(device)
    if dev not in _TABLES:
        u = (torch.arange(1 << 16, dtype=torch.float64) + 0.5) / (1 << 16)
        _TABLES[dev] = torch.special.ndtri(u).to(torch.float32).to(dev)
    return _TABLES[dev]


def _check_group(start: int, gaussian: bool) -> None:
    """Portable chunks start at a group boundary (pairs for a Gaussian, 32 for Rademacher)."""
    group = _GAUSSIAN_GROUP if gaussian else _RADEMACHER_GROUP
    if start % group:
        raise ValueError(f"portable chunks must start at a multiple of {group}")


def _portable_fill(key: int, start: int, out: torch.Tensor, gaussian: bool) -> None:
    n = out.numel()
    group = _GAUSSIAN_GROUP if gaussian else _RADEMACHER_GROUP
    _check_group(start, gaussian)
    g0 = start // group
    g1 = (start + n + group - 1) // group
    h = portable_bits(key, g0, g1 - g0, out.device)
    if gaussian:
        halves = torch.stack((h & 0xFFFF, h >> 16), dim=1).reshape(-1)[:n]
        torch.take(gaussian_table(out.device), halves, out=out) if out.dtype == torch.float32 \
            else out.copy_(gaussian_table(out.device)[halves])
    else:
        shifts = torch.arange(32, dtype=torch.int64, device=out.device)
        bits = ((h.unsqueeze(1) >> shifts) & 1).reshape(-1)[:n]
        out.copy_(bits).mul_(2).sub_(1)


_Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_compiled: dict[bool, _Kernel | None] = {}


def _compiled_portable(gaussian: bool) -> _Kernel | None:
    """The portable fill compiled with torch.compile in int64 lanes (None when no compiler
    works): used off the CPU; a CPU takes :mod:`fedzo.zo.cpu_lanes`' int32 lanes."""
    if gaussian not in _compiled:
        try:
            def kernel(h_idx: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor,
                       table: torch.Tensor) -> torch.Tensor:
                x = _mix32((h_idx & _M32) ^ k0)
                h = _mix32(x ^ (((h_idx >> 32) + k1) & _M32))
                if gaussian:
                    halves = torch.stack((h & 0xFFFF, h >> 16), dim=1).reshape(-1)
                    return table[halves]
                shifts = torch.arange(32, dtype=torch.int64, device=h.device)
                return (((h.unsqueeze(1) >> shifts) & 1).reshape(-1) * 2 - 1).to(torch.float32)

            _compiled[gaussian] = torch.compile(kernel, dynamic=True, fullgraph=True)
        except Exception:  # noqa: BLE001  # pragma: no cover - any compiler failure falls back to eager
            _compiled[gaussian] = None
    return _compiled[gaussian]


# --------------------------------------------------------------------------- generator
class DirectionStream:
    """Produces the chunks of one direction (one seed) in the canonical walk.

    For the ``torch`` generator the chunks of a tensor must be requested in order,
    starting at 0 with the spec's chunk size; the ``portable`` generator allows any
    order and any chunk size.
    """

    def __init__(self, spec: NoiseSpec, seed: int, *, compiled: bool = False) -> None:
        self.spec = spec
        self.seed = seed
        self.compiled = compiled
        self._gens: dict[int, tuple[torch.Generator, int]] = {}

    def fill(self, tensor_index: int, start: int, out: torch.Tensor) -> torch.Tensor:
        """Write the direction's elements ``[start, start+len(out))`` of a tensor into ``out``."""
        key = derive_seed(self.seed, tensor_index)
        gaussian = self.spec.distribution is Distribution.GAUSSIAN
        if self.spec.generator is GeneratorKind.PORTABLE:
            if self.compiled and out.device.type == "cpu" and out.dtype == torch.float32 and out.is_contiguous():
                _check_group(start, gaussian)
                from fedzo.zo.cpu_lanes import fill  # 32-bit lanes: vectorised on AVX2 hosts too

                if fill(key_words(key), start, out, gaussian_table(out.device), gaussian):
                    return out
            kern = _compiled_portable(gaussian) if self.compiled and out.device.type != "cpu" else None
            if kern is not None and out.dtype == torch.float32:
                _check_group(start, gaussian)
                group = _GAUSSIAN_GROUP if gaussian else _RADEMACHER_GROUP
                n = out.numel()
                g0, g1 = start // group, (start + n + group - 1) // group
                idx = torch.arange(g0, g1, dtype=torch.int64, device=out.device)
                # filled on the device: torch.tensor(v, device="cuda") would copy from the host
                # and wait for the stream (twice a chunk); a fill kernel just queues
                w0, w1 = key_words(key)
                k0 = torch.full((), w0, dtype=torch.int64, device=out.device)
                k1 = torch.full((), w1, dtype=torch.int64, device=out.device)
                try:
                    out.copy_(kern(idx, k0, k1, gaussian_table(out.device))[:n])
                    return out
                except Exception:  # noqa: BLE001  # compiled lazily: no C compiler, an unsupported device...
                    _compiled[gaussian] = None  # eager from now on: the same bits
            _portable_fill(key, start, out, gaussian)
            return out
        gen, expected = self._gens.get(tensor_index, (None, 0))
        if gen is None or start == 0:
            gen = torch.Generator(device=out.device)
            gen.manual_seed(key)
            expected = 0
        if start != expected:
            raise RuntimeError(
                f"torch generator chunks must be consumed in order: asked for offset {start}, "
                f"next is {expected}"
            )
        if gaussian:
            out.normal_(generator=gen)
        else:
            out.bernoulli_(0.5, generator=gen).mul_(2).sub_(1)
        self._gens[tensor_index] = (gen, start + out.numel())
        return out
