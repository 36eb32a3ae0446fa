"""Regeneration seconds per element of the compiled portable generator, and a plain copy of
the same tensors, in one process (``Perturber.apply(seed, (0.0,))`` with ``compiled=True``,
as ``fedzo bench zo`` times a regeneration); prints JSON. Run once per checkout (before and
after a change) and compare the ratios::

    PYTHONPATH=. python scripts/bench_cpu_lanes.py
    ATEN_CPU_CAPABILITY=avx2 TORCHINDUCTOR_CACHE_DIR=/tmp/ic-avx2 PYTHONPATH=. python scripts/bench_cpu_lanes.py

The fused update is :mod:`fedzo.zo.native_lanes`' C kernel where it builds; with
``FEDZO_NATIVE_LANES=0`` torch.compile's kernel. ``--march haswell`` builds the C kernel for
that processor type instead of the host's (``-march=native``), into a cache of its own: AVX2
code on an AVX-512 host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from fedzo.zo import NoiseSpec, ParamSet, Perturber, native_lanes

TENSORS, PER_TENSOR = 8, 16_814_376  # 134.5 M elements, SmolLM2-135M's trainable count


def _median(f: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Time a copy and a regeneration per distribution."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--march", default=None, help="build the C kernel with -march=MARCH (default: native)")
    args = p.parse_args()
    if args.march:
        native_lanes.FLAGS = tuple(f"-march={args.march}" if f == "-march=native" else f for f in native_lanes.FLAGS)
        os.environ["FEDZO_CACHE"] = tempfile.mkdtemp(prefix=f"fedzo-{args.march}-")
    params = ParamSet.from_tensors({f"t{i}": torch.zeros(PER_TENSOR) for i in range(TENSORS)})
    src = [torch.ones(PER_TENSOR) for _ in range(TENSORS)]
    out: dict[str, object] = {"threads": torch.get_num_threads(), "march": args.march or "native",
                              "native_kernel": native_lanes.library() is not None}
    for dist in ("gaussian", "rademacher"):
        pert = Perturber(params, NoiseSpec("portable", dist), compiled=True)
        pert.apply(1, (0.0,))  # compile
        copy_s = _median(lambda: [d.copy_(s) for d, s in zip(params.tensors, src, strict=True)])
        regen_s = _median(lambda: pert.apply(7, (0.0,)))  # noqa: B023  # called before the loop moves on
        out[dist] = {"regen_s": regen_s, "ns_per_element": regen_s / (TENSORS * PER_TENSOR) * 1e9,
                     "copy_s": copy_s, "fraction_of_copy": copy_s / regen_s}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
