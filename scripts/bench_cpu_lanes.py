"""Regeneration seconds per element of the compiled portable generator, and a plain copy of
the same tensors, in one process (``Perturber.apply(seed, (0.0,))`` with ``compiled=True``,
as ``fedzo bench zo`` times a regeneration); prints JSON. Run once per checkout (before and
after a change) and compare the ratios::

    PYTHONPATH=. python scripts/bench_cpu_lanes.py
    ATEN_CPU_CAPABILITY=avx2 TORCHINDUCTOR_CACHE_DIR=/tmp/ic-avx2 PYTHONPATH=. python scripts/bench_cpu_lanes.py

The fused update is :mod:`fedzo.zo.native_lanes`' C kernel where it builds; with
``FEDZO_NATIVE_LANES=0`` torch.compile's kernel. ``--march haswell`` builds the C kernel for
that processor type instead of the host's (``-march=native``), into a cache of its own: AVX2
code on an AVX-512 host. ``--model smollm2-135m`` times the model's own 272 tensors instead
(and a replay of 10 entries, ``Perturber.apply_many``); ``--per-tensor`` makes the C kernel
serve one tensor and one entry per call, as before the one-call table (the comparison's
other arm).
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
    p.add_argument("--model", default=None, help="time this model's tensors (e.g. smollm2-135m) instead")
    p.add_argument("--per-tensor", action="store_true", help="one C call per tensor and entry, not one per table")
    args = p.parse_args()
    if args.per_tensor:
        Perturber._apply_native = lambda self, entries: False  # type: ignore[method-assign]
    if args.march:
        native_lanes.FLAGS = tuple(f"-march={args.march}" if f == "-march=native" else f for f in native_lanes.FLAGS)
        os.environ["FEDZO_CACHE"] = tempfile.mkdtemp(prefix=f"fedzo-{args.march}-")
    if args.model:
        from fedzo.models import load_model

        params = ParamSet.from_module(load_model(args.model).model, lambda n, p: True)
    else:
        params = ParamSet.from_tensors({f"t{i}": torch.zeros(PER_TENSOR) for i in range(TENSORS)})
    src = [torch.ones_like(t) for t in params.tensors]
    numel = sum(t.numel() for t in params.tensors)
    out: dict[str, object] = {"threads": torch.get_num_threads(), "march": args.march or "native",
                              "native_kernel": native_lanes.library() is not None, "tensors": len(params.tensors),
                              "elements": numel, "per_tensor": args.per_tensor}
    for dist in ("gaussian", "rademacher"):
        pert = Perturber(params, NoiseSpec("portable", dist), compiled=True)
        pert.apply(1, (0.0,))  # compile
        copy_s = _median(lambda: [d.copy_(s) for d, s in zip(params.tensors, src, strict=True)])
        regen_s = _median(lambda: pert.apply(7, (0.0,)))  # noqa: B023  # called before the loop moves on
        entries = [(100 + k, (0.0,)) for k in range(10)]
        replay_s = _median(lambda: pert.apply_many(entries))  # noqa: B023
        out[dist] = {"regen_s": regen_s, "ns_per_element": regen_s / numel * 1e9,
                     "copy_s": copy_s, "fraction_of_copy": copy_s / regen_s, "replay_10_entries_s": replay_s}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
