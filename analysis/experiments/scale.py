"""Experiment 4: fleet scale. 10, 100 and 1000 simulated clients at 10 % participation.

Two parts:

* ``runs``: ``scenarios/large-fleet.yaml`` (tiny model, in-process engine) with
  ``num_clients`` set to 10, 100 and 1000: host seconds per round, the server's replay
  time per round (``server_replay_seconds`` in metrics.jsonl: applying the aggregated
  update to the global model) and the run's peak host RSS.
* ``server_at_model_size``: the server's aggregation + replay of one round at the size
  of SmolLM2-135M (134,515,008 parameters, K = 10 seeds) with 10, 100 and 1000 replies,
  as ``fedzo bench federation`` measures it (best of 3).

::

    python -m analysis.experiments.scale --out analysis/results/scale

writes ``results.json`` and ``table.md`` into OUT. Finished runs are reused.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import run_scenario, write_results

SMOLLM2_NUMEL = 134_515_008


def round_figures(run_dir: Path) -> dict[str, Any]:
    """Per-round host seconds and server replay seconds (medians over rounds 1..R; replay
    over the rounds with at least one participant)."""
    from fedzo.runs import RunDir

    rounds = [r for r in RunDir.read(run_dir).rounds() if r.round > 0]
    host = [(b.host_seconds or 0.0) - (a.host_seconds or 0.0) for a, b in itertools.pairwise(rounds)]
    host = [rounds[0].host_seconds or 0.0, *host] if rounds else []
    # a round nobody took part in (all sampled clients offline) has nothing to replay
    replay = [r.server_replay_seconds for r in rounds if r.server_replay_seconds is not None and r.participants > 0]
    return {"rounds": len(rounds), "participants_per_round": [r.participants for r in rounds],
            "host_seconds_per_round": statistics.median(host) if host else None,
            "server_replay_seconds_per_round": statistics.median(replay) if replay else None}


def scaled_fleet(scenario: str | Path, n: int) -> dict[str, Any]:
    """The scenario's fleet with its device mix scaled to ``n`` clients (largest remainder)."""
    import yaml

    fleet = yaml.safe_load(Path(scenario).read_text(encoding="utf-8"))["fleet"]
    devices = fleet["devices"]
    total = sum(d["count"] for d in devices)
    exact = [d["count"] * n / total for d in devices]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])[: n - sum(counts)]:
        counts[i] += 1
    return {**fleet, "devices": [{**d, "count": c} for d, c in zip(devices, counts, strict=True) if c > 0]}


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one line per fleet size, for both parts."""
    lines = ["Tiny model runs (`scenarios/large-fleet.yaml`, 10 % participation, in-process engine):", "",
             "| clients | participants per round | host s / round | server replay ms / round | peak host RSS |",
             "|---|---|---|---|---|"]
    for n, r in result["runs"].items():
        parts = r["participants_per_round"]
        lines.append(f"| {n} | {min(parts)}-{max(parts)} | {r['host_seconds_per_round']:.2f} | "
                     f"{r['server_replay_seconds_per_round'] * 1e3:.2f} | {r['server_peak_rss_bytes'] / 1e6:,.0f} MB |")
    lines += ["", (f"Server aggregation + replay of one round at SmolLM2-135M size ({SMOLLM2_NUMEL:,} parameters, "
              f"K = {result['k']}):"), "", "| replies | aggregate + replay s | reply validation s |", "|---|---|---|"]
    for n, r in result["server_at_model_size"].items():
        lines.append(f"| {n} | {r['aggregate_replay_seconds']:.2f} | {r['validate_seconds']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the fleets, time the server at model size, write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/scale")
    p.add_argument("--scenario", default="scenarios/large-fleet.yaml")
    p.add_argument("--clients", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--numel", type=int, default=SMOLLM2_NUMEL, help="parameters of the server-side timing")
    p.add_argument("--k", type=int, default=10, help="seeds per round of the server-side timing")
    a = p.parse_args(argv)
    out = Path(a.out)
    t0 = time.perf_counter()
    runs: dict[str, Any] = {}
    for n in a.clients:
        run_dir = out / "runs" / f"clients-{n}"
        over = {"name": f"scale-{n}", "federation": {"num_clients": n}, "fleet": scaled_fleet(a.scenario, n)}
        s = run_scenario(a.scenario, run_dir, overrides=over)
        runs[str(n)] = {**round_figures(run_dir), "server_peak_rss_bytes": s["server_peak_rss_bytes"],
                        "host_seconds_total": s["host_seconds"]}
    from fedzo.bench.federation import server_round_seconds

    server = {str(n): server_round_seconds(n, a.numel, a.k) for n in a.clients}
    result = {"k": a.k, "numel": a.numel, "runs": runs, "server_at_model_size": server,
              "seconds_this_invocation": time.perf_counter() - t0}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
