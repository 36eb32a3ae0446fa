"""What glibc's malloc keeps around a training step, and what forcing blocks back costs.

The memory model predicts a step's live tensors and adds a slack for the allocator. On
glibc, freed blocks below the (dynamic) mmap threshold stay in the heap, and backprop's
alloc/free pattern makes the process grow well past its live tensors. Each configuration
runs in fresh processes (:func:`fedzo.devices.validate.measure`): once with the default
allocator and once per fixed ``MALLOC_MMAP_THRESHOLD_`` (blocks at least that large are
mapped and unmapped one by one), ``--repeats`` times, interleaved. It reports the process
growth over its imports, the step's live tensors (:mod:`fedzo.devices.tensor_peak`) and
the step's host seconds::

    python -m analysis.experiments.allocator --out analysis/results/allocator

writes ``results.json`` and ``table.md`` into OUT. Host seconds depend on the load
of the machine; compare them within one invocation only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import write_results
from fedzo.devices.validate import ValidationCase, measure

CASES: tuple[ValidationCase, ...] = (
    ValidationCase("smollm2-135m", "zo", 16, 64),
    ValidationCase("smollm2-135m", "zo", 8, 128, peft="prompt"),
    ValidationCase("smollm2-135m", "bp", 8, 128, peft="lora", optimizer="adam", checkpointing=True),
    ValidationCase("smollm2-135m", "bp", 8, 128, peft="lora", optimizer="adam"),
)
ENV = "MALLOC_MMAP_THRESHOLD_"


def measure_with(case: ValidationCase, threshold: int | None) -> dict[str, Any]:
    """One fresh-process measurement of ``case`` under a fixed mmap threshold (None: glibc's default)."""
    saved = os.environ.pop(ENV, None)
    try:
        if threshold is not None:
            os.environ[ENV] = str(threshold)
        m = measure(case, timeout=1800)
    finally:
        os.environ.pop(ENV, None)
        if saved is not None:
            os.environ[ENV] = saved
    return {"growth_bytes": int(m["hwm"]) - int(m["rss_import"]), "tensors_bytes": m.get("tensors"),
            "seconds": float(m["seconds"])}


def run(thresholds: list[int | None], repeats: int) -> list[dict[str, Any]]:
    """Every case under every threshold, ``repeats`` times, interleaved (a row per case and threshold)."""
    rows = []
    for case in CASES:
        samples: dict[int | None, list[dict[str, Any]]] = {t: [] for t in thresholds}
        for _ in range(repeats):
            for t in thresholds:
                samples[t].append(measure_with(case, t))
        base = statistics.median(s["seconds"] for s in samples[None]) if None in samples else None
        for t, got in samples.items():
            seconds = statistics.median(s["seconds"] for s in got)
            rows.append({"case": case.label, "mode": case.mode, "mmap_threshold": t,
                         "growth_bytes": [s["growth_bytes"] for s in got],
                         "tensors_bytes": got[0]["tensors_bytes"], "seconds": [s["seconds"] for s in got],
                         "seconds_vs_default": None if base is None else seconds / base})
            print(f"{case.label} ({case.mode}), threshold {t}: growth "
                  f"{[round(g / 1e6) for g in rows[-1]['growth_bytes']]} MB, {seconds:.2f} s", flush=True)
    return rows


def format_table(result: dict[str, Any]) -> str:
    """Markdown: growth over imports, live tensors and relative step time per threshold."""
    header = ("| case | mode | mmap threshold | process growth (MB, per run) | step's live tensors | "
              "step time vs default (median) |")
    lines = [header, "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        t = "glibc default" if r["mmap_threshold"] is None else f"{r['mmap_threshold'] >> 10} KiB"
        growth = ", ".join(f"{g / 1e6:.0f}" for g in r["growth_bytes"])
        tensors = "n/a" if r["tensors_bytes"] is None else f"{r['tensors_bytes'] / 1e6:.0f} MB"
        ratio = "" if r["seconds_vs_default"] is None else f"{r['seconds_vs_default']:.2f}x"
        lines.append(f"| {r['case']} | {r['mode']} | {t} | {growth} | {tensors} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure, then write results.json and table.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/allocator")
    p.add_argument("--thresholds", type=int, nargs="+", default=[1 << 20, 4 << 20],
                   help="fixed mmap thresholds in bytes, each against glibc's default")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    rows = run([None, *a.thresholds], a.repeats)
    result = {"command": " ".join(["python -m analysis.experiments.allocator", *(sys.argv[1:] if argv is None else argv)]),
              "rows": rows}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
