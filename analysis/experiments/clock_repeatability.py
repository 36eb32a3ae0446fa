"""How well can any clock match this host? The same validation cases measured in several runs.

``fedzo calibrate --validate`` measures each case as the median of a few fresh processes.
Its measured seconds do not depend on the calibration being checked, so validation runs of
the same cases against different calibrations are repeated measurements of the host. If a
case's median moves between runs, no fixed prediction can be close to every run: for
measurements ``m_1 .. m_n`` the smallest worst-case relative error a single prediction can
reach is ``(max - min) / (max + min)`` (the prediction ``2 max min / (max + min)``). This
script reads validation JSONs, lines up their cases by label, and reports that floor per
case next to the errors each run's own calibration got::

    python -m analysis.experiments.clock_repeatability analysis/results/clock/validation-2026-12-03*.json

It writes ``analysis/results/clock/repeatability/`` (``results.json``, ``table.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import write_results


def floor(measured: list[float]) -> float:
    """The smallest worst-case relative error any single prediction has against ``measured``."""
    lo, hi = min(measured), max(measured)
    return (hi - lo) / (hi + lo)


def repeatability(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per case found in every run: the measured medians, their ratio, the floor, and each
    run's own relative error; plus the largest floor over the cases."""
    labels = [c["label"] for c in next(iter(runs.values()))["cases"]]
    by_run = {name: {c["label"]: c for c in r["cases"]} for name, r in runs.items()}
    rows = []
    for label in labels:
        if not all(label in cases for cases in by_run.values()):
            continue
        measured = [cases[label]["measured_seconds"] for cases in by_run.values()]
        rows.append({"label": label, "measured_seconds": measured, "max_over_min": max(measured) / min(measured),
                     "floor": floor(measured),
                     "relative_errors": [cases[label]["relative_error"] for cases in by_run.values()]})
    return {"runs": list(runs), "cases": rows, "max_floor": max((r["floor"] for r in rows), default=0.0),
            "cases_with_floor_over_15_percent": sum(r["floor"] > 0.15 for r in rows)}


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per case."""
    runs = result["runs"]
    head = " | ".join(f"run {i + 1} s (error)" for i in range(len(runs)))
    lines = [f"| case | {head} | max / min | floor |", "|---|" + "---|" * (len(runs) + 2)]
    for r in result["cases"]:
        cells = " | ".join(f"{m:.2f} ({e:+.1%})" for m, e in zip(r["measured_seconds"], r["relative_errors"],
                                                                  strict=True))
        lines.append(f"| {r['label']} | {cells} | {r['max_over_min']:.2f} | {r['floor']:.1%} |")
    lines += ["", "Runs: " + "; ".join(f"{i + 1} = `{name}`" for i, name in enumerate(runs)) + ".",
              ("Each run's error is against the calibration it checked; the measured seconds (median of fresh "
              "processes) do not depend on it. Floor: the smallest worst-case relative error a single "
              "prediction can have against all the runs' measurements, (max - min) / (max + min). "
              f"Largest floor {result['max_floor']:.1%}; {result['cases_with_floor_over_15_percent']} of "
              f"{len(result['cases'])} cases over 15 %.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Read the validation files, write the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("validations", nargs="+", type=Path, help="fedzo calibrate --validate --json outputs")
    p.add_argument("--out", type=Path, default=Path("analysis/results/clock/repeatability"))
    a = p.parse_args(argv)
    if len(a.validations) < 2:
        print("give at least two validation files (runs of the same cases)", file=sys.stderr)
        return 2
    runs = {}
    for path in a.validations:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            data = str(exc)
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            print(f"{path}: not a `fedzo calibrate --validate --json` output (no list of cases)", file=sys.stderr)
            return 2
        runs[str(path)] = data
    write_results(a.out, repeatability(runs), table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
