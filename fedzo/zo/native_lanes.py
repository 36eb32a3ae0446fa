"""The portable direction's fused update as a small C kernel, built at first use.

torch.compile's C++ code for :mod:`fedzo.zo.cpu_lanes` vectorises the hash but reads the
Gaussian's 65,536-entry quantile table one lane at a time through a temporary array, and
that gather dominates a regeneration (about 1.9 ns an element on one AMD EPYC core, against
0.36 ns for a plain copy). ``native_lanes.c`` does the same arithmetic as plain scalar C
(about 0.65 ns an element there): one pass over the weights, no direction buffer, each alpha
one ``fmaf`` rounding as ``add_``. :func:`fedzo.zo.cpu_lanes.apply` offers it first and, as
every kernel there, uses it only after it has moved a probe of weights bitwise as ``add_``.

It is compiled with the system C compiler (``$CC``, else ``cc``) and ``-march=native`` into
the fedzo cache (``<cache>/native/<digest>.so``, the digest covering the source, the flags
and the host's processor flags, so a cache shared by different processors keeps one
library per processor), and called through ctypes, which releases the GIL; the kernel splits
its range over torch's intra-op thread count with POSIX threads. Where there is no compiler
(or ``FEDZO_NATIVE_LANES=0``) :func:`kernel` gives None and the compiled torch kernels serve.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
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


def kernel(gaussian: bool) -> Callable[..., None] | None:
    """``kernel(w, start, k0, k1, table, alphas)`` with the arguments of the compiled kernels
    of :mod:`fedzo.zo.cpu_lanes` (``w`` a contiguous 1-d float32 CPU tensor, 0-d ``start``
    and key words, up to three float32 alphas), or None without the library."""
    lib = library()
    if lib is None:
        return None
    fn = lib.fedzo_lanes_apply

    def apply(w: torch.Tensor, start: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor, table: torch.Tensor,
              alphas: torch.Tensor) -> None:
        a = alphas.to(torch.float32).contiguous()
        if (w.dtype != torch.float32 or not w.is_contiguous() or w.device.type != "cpu" or table.dtype != torch.float32
                or not table.is_contiguous() or not 1 <= a.numel() <= 3):
            raise ValueError("native lanes: contiguous float32 CPU weights and table, one to three alphas")
        code = fn(w.data_ptr(), w.numel(), int(start) & (2**64 - 1), int(k0) & 0xFFFFFFFF, int(k1) & 0xFFFFFFFF,
                  table.data_ptr(), a.data_ptr(), a.numel(), int(gaussian), torch.get_num_threads())
        if code != 0:
            raise ValueError(f"native lanes: refused its arguments ({code})")

    return apply
