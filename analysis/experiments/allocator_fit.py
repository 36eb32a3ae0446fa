"""Fit the memory model's three allocator constants to measured peaks, and check them out of sample.

The memory model (:mod:`fedzo.devices.memory`) adds what glibc keeps resident to the
tensors a step holds: a *slack* on the largest transient phase and a *reserve* of a fixed
part plus a share of the weights. This script reads the measurements of ``fedzo memory
--validate --json`` (each case's median over fresh processes), and, because the model's
peak is linear in the three constants (``predicted = base + slack x largest_phase +
reserve + per_weight x weights``), searches a grid of them for the smallest worst-case
relative error. Leave-one-out shows what that fit is worth on a case it has not seen: each
case is predicted by the constants fitted to the other twelve.

    python -m analysis.experiments.allocator_fit   # writes analysis/results/memory/allocator_fit/
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import write_results

SLACKS = [k * 0.05 for k in range(13)]  # 0 .. 0.60
RESERVES = [k * 5e6 for k in range(21)]  # 0 .. 100 MB
PER_WEIGHT = [k * 0.01 for k in range(21)]  # 0 .. 0.20 of the weights' bytes
Constants = tuple[float, float, float]


def components(row: dict[str, Any]) -> dict[str, float]:
    """The model's peak for a validation row without allocator terms, and the two sizes the
    terms scale with (the largest phase's and the weights' bytes)."""
    from fedzo.devices.validate import ValidationCase, predict

    b = predict(ValidationCase(**row["case"]), runtime_overhead=row["rss_import"], allocator=False)
    return {"base": b.total - b.runtime_overhead, "phase": b.largest_phase, "weights": b.weights,
            "measured": row["measured"]}


def predicted(c: dict[str, float], k: Constants) -> float:
    """The model-attributable peak under constants ``k`` = (slack, reserve bytes, per-weight share)."""
    slack, reserve, per_weight = k
    return c["base"] + slack * c["phase"] + reserve + per_weight * c["weights"]


def error(c: dict[str, float], k: Constants) -> float:
    """Relative error (predicted - measured) / measured."""
    return (predicted(c, k) - c["measured"]) / c["measured"]


def fit(rows: list[dict[str, float]]) -> Constants:
    """The grid point with the smallest worst-case |error| over ``rows`` (ties: the smaller constants)."""
    return min(itertools.product(SLACKS, RESERVES, PER_WEIGHT),
               key=lambda k: (max(abs(error(c, k)) for c in rows), k))


def run(validation: Path, current: Constants) -> dict[str, Any]:
    """In-sample fit, leave-one-out errors and the errors under ``current`` constants."""
    data = json.loads(validation.read_text(encoding="utf-8"))
    comps = [components(r) for r in data]
    best = fit(comps)
    folds = [fit(comps[:i] + comps[i + 1:]) for i in range(len(comps))]
    rows = [{"label": r["label"], "measured": c["measured"], "measured_runs": r.get("measured_runs"),
             "error_current": error(c, current), "error_fitted": error(c, best),
             "error_left_out": error(c, k), "fold_constants": list(k)}
            for r, c, k in zip(data, comps, folds, strict=True)]

    def worst(key: str) -> float:
        return max(abs(r[key]) for r in rows)

    return {"command": "python -m analysis.experiments.allocator_fit " + " ".join(sys.argv[1:]),
            "validation": str(validation), "objective": "smallest worst-case |relative error|",
            "current": {"slack": current[0], "reserve_bytes": current[1], "per_weight": current[2],
                        "max_abs_error": worst("error_current")},
            "fitted": {"slack": best[0], "reserve_bytes": best[1], "per_weight": best[2],
                       "max_abs_error": worst("error_fitted")},
            "left_out_max_abs_error": worst("error_left_out"),
            "rows_within_10pct_left_out": sum(abs(r["error_left_out"]) <= 0.10 for r in rows),
            "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    """Markdown: each case's error under the current and the fitted constants, and left out."""
    cur, fit_ = result["current"], result["fitted"]

    def name(k: dict[str, Any]) -> str:
        return f"slack {k['slack']:.2f}, reserve {k['reserve_bytes'] / 1e6:.0f} MB + {k['per_weight']:.2f} x weights"

    lines = [(f"Current: {name(cur)} (worst {100 * cur['max_abs_error']:.1f} %). "
             f"Fitted: {name(fit_)} (worst {100 * fit_['max_abs_error']:.1f} % in sample, "
             f"{100 * result['left_out_max_abs_error']:.1f} % left out; "
             f"{result['rows_within_10pct_left_out']} of {len(result['rows'])} rows within 10 % left out)."), "",
             "| case | measured (median) | error, current | error, fitted | error, left out |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['label']} | {r['measured'] / 1e6:,.1f} MB | {100 * r['error_current']:+.1f} % | "
                     f"{100 * r['error_fitted']:+.1f} % | {100 * r['error_left_out']:+.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Fit, write allocator_fit.json/.md next to the validation file."""
    from fedzo.devices import memory

    p = argparse.ArgumentParser(prog="python -m analysis.experiments.allocator_fit", description=__doc__.split("\n")[0])
    p.add_argument("--validation", default="analysis/results/memory/validation.json")
    p.add_argument("--out", default="analysis/results/memory/allocator_fit")
    a = p.parse_args(argv)
    current = (memory.ALLOCATOR_SLACK, float(memory.ALLOCATOR_RESERVE_BYTES), memory.ALLOCATOR_RESERVE_PER_WEIGHT_BYTE)
    write_results(Path(a.out), run(Path(a.validation), current), format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
