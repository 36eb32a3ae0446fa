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
library per processor), and called through ctypes, which releases the GIL. A tensor of a
million elements or more is shared among torch's intra-op thread count of POSIX threads,
which take blocks of 65,536 elements in turn. Where there is no compiler (or
``FEDZO_NATIVE_LANES=0``) :func:`kernel` gives None and the compiled torch kernels serve.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
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


def kernel(gaussian: bool) -> LanesKernel | None:
    """The C kernel for a Gaussian or a Rademacher direction, or None without the library."""
    lib = library()
    return None if lib is None else LanesKernel(lib, gaussian)
