"""Validating the clock's relative prices: how much dearer one configuration's step is than
another's, predicted by a calibration and measured on this host in one session.

A shared host's speed drifts between sessions by more than the absolute check can settle
(:mod:`fedzo.calibration.validate`), but the two configurations of a pair, measured
alternately in fresh processes minutes apart, see the same host: their ratio cancels the
drift. The ratio is what decides a comparison of methods on one simulated device (where an
accuracy-against-time curve of backprop crosses one of ZO), so it is checked on its own.

Each pair (A, B) is measured ``repeats`` times, A then B, then B then A, and so on, each
case in a fresh process on real batches of the task (:func:`fedzo.calibration.validate.
run_case`). Per repeat the measured ratio is seconds(A) / seconds(B); the predicted ratio
prices the same batches with the calibration. ``ratio_error`` = predicted / median measured
- 1; ``max_ratio_error`` is the largest magnitude over the pairs (goal at most 0.10).
A calibration holds for the CPU capability it was measured on: the result names both.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

from fedzo.calibration.model import Calibration
from fedzo.calibration.validate import Case, measure_in_fresh_process, predicted_seconds

GOAL = 0.10


@dataclass(frozen=True)
class Pair:
    """Two configurations whose step-seconds ratio is checked (A over B)."""

    name: str
    a: Case
    b: Case


def default_pairs() -> list[Pair]:
    """The ratios the equal-memory experiment's conclusions rest on, at its batch (8 rows of
    Rotten Tomatoes, the task's 128-token limit) and with its optimizers (backprop with Adam):
    ZO SmolLM2 prompt against backprop MiniLM full, ZO SmolLM2 full against prompt,
    checkpointed backprop SmolLM2 LoRA against backprop MiniLM full."""
    zo_prompt = Case("smollm2-135m", "zo", "prompt", 8, 128, steps=8)
    bp_minilm = Case("minilm-l6", "bp", "full", 8, 128, steps=8, optimizer="adam")
    return [
        Pair("bp-minilm-full / zo-smollm2-prompt", bp_minilm, zo_prompt),
        Pair("zo-smollm2-full / zo-smollm2-prompt", Case("smollm2-135m", "zo", "full", 8, 128, steps=8), zo_prompt),
        Pair("bp-smollm2-lora-ckpt / bp-minilm-full",
             Case("smollm2-135m", "bp", "lora", 8, 128, steps=8, checkpointing=True, optimizer="adam"), bp_minilm),
    ]


def validate_ratios(cal: Calibration, pairs: list[Pair], threads: int, source: str, repeats: int = 3,
                    capability: str | None = None) -> dict[str, Any]:
    """Every pair measured ``repeats`` times alternating in fresh processes; predicted and
    measured ratios, their spread and ``max_ratio_error``."""
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        measured: list[float] = []
        seconds: dict[str, list[float]] = {"a": [], "b": []}
        pred = None
        for rep in range(repeats):
            order = ("a", "b") if rep % 2 == 0 else ("b", "a")
            got = {side: measure_in_fresh_process(getattr(pair, side), threads) for side in order}
            for side in ("a", "b"):
                seconds[side].append(got[side]["seconds"])
            measured.append(got["a"]["seconds"] / got["b"]["seconds"])
            if pred is None:  # the same batches every repeat (fixed sampling seed)
                pred = (predicted_seconds(cal, pair.a, got["a"], source)
                        / predicted_seconds(cal, pair.b, got["b"], source))
        assert pred is not None
        med = statistics.median(measured)
        rows.append({"pair": pair.name, "a": asdict(pair.a), "b": asdict(pair.b), "predicted_ratio": pred,
                     "measured_ratio": med, "measured_ratios": sorted(measured),
                     "measured_spread": max(measured) / min(measured) - 1.0,
                     "a_seconds": seconds["a"], "b_seconds": seconds["b"], "ratio_error": pred / med - 1.0})
        print(f"{pair.name}: predicted {pred:.3f}, measured {med:.3f} (median of {repeats}, "
              f"{min(measured):.3f}-{max(measured):.3f}) ({rows[-1]['ratio_error']:+.1%})", file=sys.stderr, flush=True)
    worst = max((abs(r["ratio_error"]) for r in rows), default=0.0)
    recorded = cal.host.cpu_capability
    return {"calibration": source, "calibration_host": cal.host.model_dump(), "calibration_cpu_capability": recorded,
            "host_cpu_capability": capability, "same_capability": None if recorded is None else recorded == capability,
            "threads": threads, "repeats": repeats, "pairs": rows, "max_ratio_error": worst, "goal": GOAL,
            "meets_goal": worst <= GOAL}
