"""The portable direction's fused update as a small C kernel, built at first use.

torch.compile's C++ code for :mod:`fedzo.zo.cpu_lanes` vectorises the hash but reads the
Gaussian's 65,536-entry quantile table one lane at a time through a temporary array, and
that gather dominates a regeneration. ``native_lanes.c`` does the same arithmetic as plain
C: one pass over the weights, no direction buffer, each alpha one ``fmaf`` rounding as
``add_`` (about 2x faster per element, ``docs/benchmarks.md``). :func:`fedzo.zo.cpu_lanes.apply`
offers it first and, as every kernel there, uses it only after it has moved a probe of
weights bitwise as ``add_``.

It is compiled with the system C compiler (``$CC``, else ``cc``) and ``-march=native`` into
the fedzo cache (``<cache>/native/lanes-<digest>.so``, the digest covering the source, the
flags and the host's processor flags, so a cache shared by different processors keeps one
library per processor), and called through ctypes, which releases the GIL. One call
(:meth:`LanesKernel.apply_table`) covers a whole parameter set and any number of directions:
up to torch's intra-op thread count of POSIX threads take blocks of 65,536 elements of all
tensors in turn (a thread per million element updates at most), and each block takes every
direction in order while it is in the cache, which is the order the directions applied one by
one would give each element. Where there is no compiler (or ``FEDZO_NATIVE_LANES=0``)
:func:`kernel` gives None and the compiled torch kernels serve.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("native_lanes.c")
FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared", "-pthread")
ENV = "FEDZO_NATIVE_LANES"  # "0": do not build or use the C kernel

_LIBRARY: list[ctypes.CDLL | None] = []  # built and loaded once per process ([] until tried)


def _processor() -> str:
    """What ``-march=native`` compiles for: the host's processor model and flags."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keep = [line for line in info if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(dict.fromkeys(keep))  # the first processor's lines (identical cores)


def library_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where this host's build of the kernel lives (it may not exist yet)."""
    from fedzo.cache import cache_root

    digest = hashlib.sha256(SOURCE.read_bytes() + "\0".join(FLAGS).encode() + _processor().encode()).hexdigest()
    return cache_root(cache_dir) / "native" / f"lanes-{digest[:16]}.so"


def build(path: Path) -> None:
    """Compile the kernel into ``path`` (atomically: a partial build never sits there);
    OSError or CalledProcessError when the compiler is missing or fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        subprocess.run([os.environ.get("CC", "cc"), *FLAGS, "-o", tmp, str(SOURCE), "-lm"],
                       check=True, capture_output=True, timeout=120)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built first where needed; None where it cannot be had."""
    if not _LIBRARY:
        lib = None
        if os.environ.get(ENV, "1") != "0":
            try:
                path = library_path()
                if not path.is_file():
                    build(path)
                lib = ctypes.CDLL(str(path))
                fn = lib.fedzo_lanes_apply
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint32,
                               ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
                table = lib.fedzo_lanes_apply_table
                table.restype = ctypes.c_int
                table.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
            except (OSError, subprocess.SubprocessError, AttributeError):
                lib = None
        _LIBRARY.append(lib)
    return _LIBRARY[0]


class LanesKernel:
    """The C kernel for one distribution, called as the compiled kernels of
    :mod:`fedzo.zo.cpu_lanes` are: ``kernel(w, start, k0, k1, table, alphas)`` with ``w`` a
    contiguous 1-d float32 CPU tensor of any length, 0-d ``start`` and key words, and one to
    three float32 alphas."""

    def __init__(self, lib: ctypes.CDLL, gaussian: bool) -> None:
        self.fn = lib.fedzo_lanes_apply
        self.table_fn = lib.fedzo_lanes_apply_table
        self.gaussian = gaussian

    def __call__(self, w: torch.Tensor, start: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor,
                 table: torch.Tensor, alphas: torch.Tensor) -> None:
        """``w += a * z`` for each alpha in order, ``z`` the direction from position ``start``."""
        a = alphas.to(torch.float32).contiguous()
        if (w.dtype != torch.float32 or not w.is_contiguous() or w.device.type != "cpu" or table.dtype != torch.float32
                or not table.is_contiguous() or not 1 <= a.numel() <= 3):
            raise ValueError("native lanes: contiguous float32 CPU weights and table, one to three alphas")
        code = self.fn(w.data_ptr(), w.numel(), int(start) & (2**64 - 1), int(k0) & 0xFFFFFFFF,
                       int(k1) & 0xFFFFFFFF, table.data_ptr(), a.data_ptr(), a.numel(), int(self.gaussian),
                       torch.get_num_threads())
        if code != 0:
            raise ValueError(f"native lanes: refused its arguments ({code})")


    def apply_table(self, tensors: Sequence[torch.Tensor], keys: Sequence[Sequence[tuple[int, int]]],
                    alphas: Sequence[Sequence[float]], table: torch.Tensor,
                    starts: Sequence[int] | None = None) -> None:
        """Entry after entry, ``w += a * z`` over every tensor in one call: ``keys[e][s]`` the
        key words of entry ``e``'s direction on tensor ``s`` (which starts at stream position
        ``starts[s]``, default 0), ``alphas[e]`` its one to three alphas in order. Each element
        is updated in the order of the entries applied one by one, so the bits are theirs; the
        threads share blocks of all tensors (small ones included) and a block takes every
        entry while it is in the cache."""
        if any(t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu" for t in tensors) \
                or table.dtype != torch.float32 or not table.is_contiguous():
            raise ValueError("native lanes: contiguous float32 CPU weights and table")
        if len(keys) != len(alphas) or any(len(k) != len(tensors) for k in keys) \
                or any(not 1 <= len(a) <= 3 for a in alphas):
            raise ValueError("native lanes: one key per tensor and one to three alphas per entry")
        n, e = len(tensors), len(alphas)
        segs = (ctypes.c_int64 * (3 * n))()
        for i, t in enumerate(tensors):
            segs[3 * i: 3 * i + 3] = [t.data_ptr(), t.numel(), 0 if starts is None else int(starts[i])]
        words = (ctypes.c_uint32 * (2 * n * e))(*(x & 0xFFFFFFFF for row in keys for pair in row for x in pair))
        slots = (ctypes.c_float * (3 * e))(*(x for a in alphas for x in (*a, *[0.0] * (3 - len(a)))))
        counts = (ctypes.c_int32 * e)(*(len(a) for a in alphas))
        code = self.table_fn(segs, n, words, slots, counts, e, table.data_ptr(), int(self.gaussian),
                             torch.get_num_threads())
        if code != 0:
            raise ValueError(f"native lanes: refused its arguments ({code})")


def kernel(gaussian: bool) -> LanesKernel | None:
    """The C kernel for a Gaussian or a Rademacher direction, or None without the library."""
    lib = library()
    return None if lib is None else LanesKernel(lib, gaussian)
