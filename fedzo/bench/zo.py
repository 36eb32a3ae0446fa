"""`fedzo bench zo`: ZO step cost and memory against plain inference, in one run.

Ratios printed:

* ``step_over_two_forwards``: fused ZO step seconds / the seconds of two forwards timed
  just before it, median over repeats (pairing cancels machine drift), default variant
  (portable generator, Gaussian). A step is 2 forwards + 3 regenerations, so
  the excess over 1 is the regeneration cost.
* ``memory_over_inference``: peak RSS of a process doing ZO steps / peak RSS of a
  process doing only inference (each a fresh process, same model and batch).
* ``regeneration_fraction_of_copy_bandwidth``: (2 x the trainable bytes / the seconds of one
  regeneration-and-add) / (2 x the same bytes / the seconds of a plain copy of the same
  tensors), both timed in the same process: 1.0 is a regeneration at memory speed.
* the same for the naive MeZO reference step (framework Gaussian regenerated 4 times,
  out-of-place update) and for one backprop step with Adam.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from fedzo.errors import FedzoError

VARIANTS = [("portable", "gaussian"), ("portable", "rademacher"), ("torch", "gaussian"), ("torch", "rademacher")]


def default_model() -> str:
    """The embedded SmolLM2 when its fp32 cache is present, else the tiny model."""
    from fedzo.models.loading import smollm2_cached

    return "smollm2-135m" if smollm2_cached() else "tiny-llama"


def _worker(args: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "fedzo.bench.zo_worker", json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if proc.returncode != 0:
        raise FedzoError(f"benchmark worker ({args['mode']}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_bench(model: str, batch: int, seq: int, *, repeats: int = 3, compile: bool = True,
              chunk_size: int = 1 << 20, threads: int | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Measure everything; returns the report dict (see module docstring)."""
    base = {"model": model, "batch": batch, "seq": seq, "chunk_size": chunk_size,
            "compile": compile, "threads": threads, "generator": "portable", "distribution": "gaussian"}
    timing = _worker({**base, "mode": "timing", "repeats": repeats, "variants": VARIANTS}, timeout)
    mem = {m: _worker({**base, "mode": m}, timeout)["peak_rss_bytes"] for m in ("infer", "zo", "mezo", "bp")}
    fwd = timing["forward_seconds"]
    variants = []
    copy_s = timing["copy_seconds"]
    for v in timing["variants"]:
        variants.append({"step_over_two_forwards": v["step_seconds"] / (2 * fwd),
                         "regeneration_fraction_of_copy_bandwidth": copy_s / v["regeneration_seconds"], **v})
    default = variants[0]
    return {
        "model": model, "n_params": timing["n_params"], "batch": batch, "seq": seq,
        "forward_seconds": fwd,
        "zo_step_seconds": default["step_seconds"],
        "step_over_two_forwards": default["step_over_two_forwards"],
        "memory_over_inference": mem["zo"] / mem["infer"],
        # (2 x trainable bytes / one regeneration's seconds) / (2 x the same bytes / a plain copy's seconds)
        "regeneration_fraction_of_copy_bandwidth": default["regeneration_fraction_of_copy_bandwidth"],
        "copy_seconds": copy_s, "trainable_bytes": timing["trainable_bytes"],
        "variants": variants,
        "mezo_reference": {"step_seconds": timing["mezo_step_seconds"],
                           "step_over_two_forwards": timing["mezo_step_over_two_forwards"],
                           "memory_over_inference": mem["mezo"] / mem["infer"]},
        "backprop_adam": {"step_seconds": timing["bp_step_seconds"],
                          "step_over_two_forwards": timing["bp_step_over_two_forwards"],
                          "memory_over_inference": mem["bp"] / mem["infer"]},
        "peak_rss_bytes": mem,
        "torch_threads": threads,
    }


def format_report(r: dict[str, Any]) -> str:
    """Human-readable table of a report."""
    gib = 1 << 30
    lines = [
        f"model {r['model']} ({r['n_params'] / 1e6:.1f} M params), batch {r['batch']} x {r['seq']} tokens",
        f"forward (last-position logits): {r['forward_seconds']:.3f} s",
        "",
        f"{'step':38s} {'seconds':>8s} {'/2 fwd':>7s} {'mem/infer':>9s}",
    ]
    for v in r["variants"]:
        name = f"ZO fused, {v['generator']} {v['distribution']}" + (" (compiled)" if v["compiled"] else "")
        mem = f"{r['memory_over_inference']:9.3f}" if v is r["variants"][0] else f"{'':9s}"
        lines.append(f"{name:38s} {v['step_seconds']:8.3f} {v['step_over_two_forwards']:7.3f} {mem}")
    for key, name in (("mezo_reference", "MeZO reference (4 regen, out-of-place)"),
                      ("backprop_adam", "backprop + Adam")):
        v = r[key]
        lines.append(f"{name:38s} {v['step_seconds']:8.3f} {v['step_over_two_forwards']:7.3f} "
                     f"{v['memory_over_inference']:9.3f}")
    lines.append("")
    comp = [v for v in r["variants"] if v.get("compile_seconds")]
    for v in comp:
        lines.append(f"compile time ({v['generator']} {v['distribution']}): {v['compile_seconds']:.1f} s (not in step times)")
    lines.append("peak RSS: " + ", ".join(f"{k} {v / gib:.2f} GiB" for k, v in r["peak_rss_bytes"].items()))
    lines.append(f"step_over_two_forwards = {r['step_over_two_forwards']:.3f}   "
                 f"memory_over_inference = {r['memory_over_inference']:.3f}")
    if "regeneration_fraction_of_copy_bandwidth" in r:  # reports of 2026-12-07 on
        lines.append(f"regeneration_fraction_of_copy_bandwidth = {r['regeneration_fraction_of_copy_bandwidth']:.3f} "
                     f"(a plain copy of the {r['trainable_bytes'] / 1e6:.1f} MB takes {r['copy_seconds'] * 1e3:.2f} ms)")
    return "\n".join(lines)
