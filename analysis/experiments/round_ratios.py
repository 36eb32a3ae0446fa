"""The clock's relative price of two configurations at the level of whole client-rounds.

``fedzo calibrate --validate-ratios`` checks step-seconds ratios; a real client-round also
loads the weights it is sent, builds its optimizer and packs its reply, which no step
price holds. This reads finished run directories of two configurations (several runs each,
made alternately in fresh processes on one host) and compares, per configuration, the
median over its clients of the measured ``host_compute_seconds`` with the compute the clock
priced (``sim_compute_end - sim_replay_end``, device seconds: the host's price times the
device's slowdown). The ratio of A over B, predicted against measured, is the figure that
decides where two accuracy-against-time curves cross::

    python -m analysis.experiments.round_ratios --a runs/rt/bp-minilm-* --b runs/rt/zo-smollm2-* \\
        --out analysis/results/clock/round-ratios.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def client_rounds(run: Path) -> list[tuple[float, float]]:
    """(host compute seconds, priced device compute seconds) of each trained client-round."""
    from fedzo.records import ClientRecord
    from fedzo.runs import RunDir

    out = []
    for rec in RunDir.read(run).records():
        if not isinstance(rec, ClientRecord) or rec.status != "ok" or rec.host_compute_seconds is None:
            continue
        if rec.sim_compute_end is None or rec.sim_replay_end is None:
            continue
        out.append((rec.host_compute_seconds, rec.sim_compute_end - rec.sim_replay_end))
    return out


def side(runs: list[Path]) -> dict[str, Any]:
    """Medians over every client-round of ``runs``, and each run's own."""
    by_run = [client_rounds(run) for run in runs]  # each run's records read once
    rows = [r for got in by_run for r in got]
    if not rows:
        raise SystemExit(f"no trained client-round with host and priced compute in {[str(r) for r in runs]}")
    per_run = [statistics.median(h for h, _ in got) for got in by_run if got]
    return {"runs": [str(r) for r in runs], "client_rounds": len(rows),
            "host_seconds": statistics.median(h for h, _ in rows), "host_seconds_per_run": per_run,
            "priced_seconds": statistics.median(p for _, p in rows)}


def compare(a: list[Path], b: list[Path]) -> dict[str, Any]:
    """Predicted (priced) and measured (host) ratios of A's client-round over B's."""
    sa, sb = side(a), side(b)
    predicted = sa["priced_seconds"] / sb["priced_seconds"]
    measured = sa["host_seconds"] / sb["host_seconds"]
    per_run = [x / y for x, y in zip(sa["host_seconds_per_run"], sb["host_seconds_per_run"], strict=False)]
    return {"a": sa, "b": sb, "predicted_ratio": predicted, "measured_ratio": measured,
            "measured_ratios_by_run_pair": per_run, "ratio_error": predicted / measured - 1.0}


def main(argv: list[str] | None = None) -> int:
    """Compare two sets of run directories; print (and write) the result."""
    from fedzo.environment import cpu_capability

    p = argparse.ArgumentParser(prog="python -m analysis.experiments.round_ratios", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="+", type=Path, required=True, help="run directories of configuration A")
    p.add_argument("--b", nargs="+", type=Path, required=True, help="run directories of configuration B")
    p.add_argument("--out", type=Path, help="write the result here as JSON")
    args = p.parse_args(argv)
    from fedzo.errors import FedzoError

    try:
        result = compare(args.a, args.b) | {"host_cpu_capability": cpu_capability()}
    except FedzoError as exc:
        raise SystemExit(f"round_ratios: {exc}") from None
    print(f"A/B client-round: predicted {result['predicted_ratio']:.3f}, measured {result['measured_ratio']:.3f} "
          f"({result['ratio_error']:+.1%}); priced/host A {result['a']['priced_seconds'] / result['a']['host_seconds']:.2f}"
          f", B {result['b']['priced_seconds'] / result['b']['host_seconds']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
