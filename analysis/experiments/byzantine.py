"""Persistent Byzantine clients against the aggregators, over several seeds.

``scenarios/byzantine-tiny.yaml`` (tiny model, 20 clients x 40 rounds, every client in
every round) runs fault-free, and with 20 % of the clients persistent attackers
(``faults.byzantine.persistent``: the same 4 clients lie in every round) of each kind,
under each defence::

    python -m analysis.experiments.byzantine --out analysis/results/byzantine/persistent

writes ``results.json`` and ``table.md`` into OUT: per seed and cell the final accuracy on
the held-out examples (95 % Wilson interval), the attackers, the reputation scores
and the model hash; per cell the mean and standard deviation over the seeds of the
accuracy and of its difference from the fault-free run of the same seed. The seed draws
the data split, the sampling and the attackers. Runs go to ``--work`` (default
``runs/byzantine``) and are reused when finished, so seeds can be spread over invocations.

The defences (``--defences``, the first always ``mean``, the fault-free reference): the plain
mean, the mean behind the absolute scalar bound only, the median, the per-client reputation
(the default of seeds-and-scalars runs since 2026-12-07), reputation against the server's
own scalars on a 128-example root set, and both at threshold 0. The tables of docs/faults.md
come from ``--kinds sign_flip scale nan random`` at ``--fraction 0.2`` and ``0.3``.

``--scenario`` runs another fleet (``scenarios/byzantine-smollm2.yaml``: the embedded
SmolLM2-135M, an illustration), ``--kinds`` and ``--defences`` a subset of the cells::

    python -m analysis.experiments.byzantine --scenario scenarios/byzantine-smollm2.yaml \
        --kinds random --defences mean reputation --seeds 0 \
        --out analysis/results/byzantine/smollm2 --work runs/byzantine-smollm2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import run_scenario, write_results

SCENARIO = "scenarios/byzantine-tiny.yaml"
OUT, WORK = Path("analysis/results/byzantine/persistent"), Path("runs/byzantine")
FRACTION = 0.2
KINDS = ("sign_flip", "random")
ALL_KINDS = ("sign_flip", "random", "scale", "nan", "inf")
DEFENCES: dict[str, tuple[str, dict[str, Any]]] = {  # name: (label, federation overrides)
    # each cell names every setting it depends on, so a change of default leaves it what it was
    "mean": ("mean", {"aggregator": "mean", "reputation": False}),
    # the reply bounds as before 2026-12-07: the absolute one alone, no bound relative to the run's scale
    "mean-absolute": ("mean, absolute scalar bound only",
                      {"aggregator": "mean", "reputation": False, "max_scalar_ratio": None}),
    "median": ("median", {"aggregator": "median", "reputation": False}),
    "reputation": ("reputation (mean of the rest)",
                   {"aggregator": "mean", "reputation": True, "reputation_reference": "clients"}),
    # FLTrust's root set under seeds and scalars: the consensus is the server's own scalars
    "reputation-server": ("reputation against the server's root set (128 examples)",
                          {"aggregator": "mean", "reputation": True, "reputation_reference": "server",
                           "reference_examples": 128}),
    # the same two with a client left out as soon as its score is below chance (threshold 0, not -1):
    # quicker to drop a flipper, and an honest client below 0 now and then
    "reputation-t0": ("reputation, threshold 0",
                      {"aggregator": "mean", "reputation": True, "reputation_reference": "clients",
                       "reputation_threshold": 0.0}),
    "reputation-server-t0": ("reputation against the server's root set, threshold 0",
                             {"aggregator": "mean", "reputation": True, "reputation_reference": "server",
                              "reference_examples": 128, "reputation_threshold": 0.0}),
}


def cell(work: Path, seed: int, kind: str | None, defence: str, scenario: str = SCENARIO,
         fraction: float = FRACTION) -> dict[str, Any]:
    """One run's figures (fault-free when ``kind`` is None)."""
    from fedzo.config.faults import FaultsConfig
    from fedzo.config.scenario import load_scenario
    from fedzo.federation.transports.faults import persistent_attackers
    from fedzo.stats import wilson_interval

    name = f"seed{seed}-{kind or 'fault-free'}-{defence}" + (f"-f{fraction:g}" if kind and fraction != FRACTION else "")
    overrides: dict[str, Any] = {"seed": seed, "federation": DEFENCES[defence][1]}
    attackers: list[int] = []
    if kind is not None:
        faults = {"seed": seed, "byzantine": {"fraction": fraction, "kind": kind, "persistent": True}}
        overrides["faults"] = faults
        clients = load_scenario(scenario).federation.num_clients
        attackers = sorted(persistent_attackers(FaultsConfig.model_validate(faults), clients))
    s = run_scenario(scenario, work / name, overrides=overrides)
    acc, n = s["final_accuracy"], s["eval_n"]
    rep = s.get("reputation") or {}
    return {"run": name, "final_accuracy": acc, "interval": list(wilson_interval(acc, n)), "eval_n": n,
            "initial_accuracy": s["initial_accuracy"], "attackers": attackers, "model_sha256": s["model_sha256"],
            "reputation": rep,
            # attackers whose replies were all rejected (nan, inf) were never scored
            "attackers_scored_below_every_honest": (max(scored) < min(v for c, v in rep.items() if int(c) not in attackers))
            if (scored := [rep[str(c)] for c in attackers if str(c) in rep]) else None}


def _spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def run(work: Path, seeds: list[int], scenario: str = SCENARIO, kinds: tuple[str, ...] = KINDS,
        defences: tuple[str, ...] = tuple(DEFENCES), out: Path = OUT, fraction: float = FRACTION) -> dict[str, Any]:
    """Every cell (``kinds`` x ``defences``, and fault-free under each defence) for every
    seed, and the summary over seeds. ``defences`` starts with ``mean`` (the reference)."""
    if defences[0] != "mean":
        raise ValueError(f"--defences {' '.join(defences)}: the first must be mean (the fault-free reference)")
    t0 = time.perf_counter()
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        runs = {"fault-free": cell(work, seed, None, "mean", scenario)}
        for defence in defences[1:]:  # what each defence costs when nobody attacks
            runs[f"fault-free/{defence}"] = cell(work, seed, None, defence, scenario)
        for kind in kinds:
            for defence in defences:
                runs[f"{kind}/{defence}"] = cell(work, seed, kind, defence, scenario, fraction)
        per_seed[seed] = runs
    cells: dict[str, Any] = {}
    for key in per_seed[seeds[0]]:
        accs = [per_seed[s][key]["final_accuracy"] for s in seeds]
        deltas = [per_seed[s][key]["final_accuracy"] - per_seed[s]["fault-free"]["final_accuracy"] for s in seeds]
        cells[key] = {"accuracy": _spread(accs), "delta_vs_fault_free": _spread(deltas)}
    from fedzo.config.scenario import load_scenario

    sc = load_scenario(scenario)
    command = "python -m analysis.experiments.byzantine --seeds " + " ".join(map(str, seeds))
    if scenario != SCENARIO or kinds != KINDS or defences != tuple(DEFENCES) or fraction != FRACTION:
        command += (f" --scenario {scenario} --kinds {' '.join(kinds)} --defences {' '.join(defences)}"
                    f" --fraction {fraction:g}")
    if out != OUT or work != WORK:
        command += f" --out {out} --work {work}"
    return {
        "command": command,
        "scenario": scenario, "byzantine_fraction": fraction, "persistent": True, "seeds": seeds, "kinds": list(kinds),
        "fleet": f"{sc.federation.num_clients} clients x {sc.federation.rounds} rounds, {sc.model.name}",
        "defences": {k: {"label": DEFENCES[k][0], "federation": DEFENCES[k][1]} for k in defences},
        "cells": cells, "per_seed": {str(s): r for s, r in per_seed.items()},
        "seconds": time.perf_counter() - t0,
    }


def format_table(r: dict[str, Any]) -> str:
    """Markdown: accuracy and difference from fault-free per kind and defence (mean +- sd)."""
    c = r["cells"]
    ff = c["fault-free"]["accuracy"]
    fleet = r.get("fleet", "20 clients x 40 rounds, tiny model")
    n = r["per_seed"][str(r["seeds"][0])]["fault-free"]["eval_n"]
    lines = [(f"Fault-free: {ff['mean']:.3f} +- {ff['sd']:.3f} over seeds {r['seeds']} "
              f"({fleet}; accuracy on {n} held-out examples)"), "",
             f"| {100 * r.get('byzantine_fraction', FRACTION):.0f} % persistent attackers (accuracy, points vs "
             "fault-free mean ± sd) | " + " | ".join(v["label"] for v in r["defences"].values()) + " |",
             "|---|" + "---|" * len(r["defences"])]
    for kind in ("fault-free", *r.get("kinds", KINDS)):
        row = []
        for d in r["defences"]:
            key = "fault-free" if kind == "fault-free" and d == "mean" else f"{kind}/{d}"
            a, dl = c[key]["accuracy"], c[key]["delta_vs_fault_free"]
            row.append(f"{a['mean']:.3f} ({100 * dl['mean']:+.1f} +- {100 * dl['sd']:.1f})")
        lines.append(f"| {kind} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scenario", default=SCENARIO)
    ap.add_argument("--kinds", nargs="+", choices=ALL_KINDS, default=list(KINDS))
    ap.add_argument("--fraction", type=float, default=FRACTION, help="share of persistent attackers")
    ap.add_argument("--defences", nargs="+", choices=list(DEFENCES), default=list(DEFENCES))
    args = ap.parse_args(argv)
    try:
        result = run(args.work, args.seeds, args.scenario, tuple(args.kinds), tuple(args.defences), args.out,
                     args.fraction)
    except ValueError as e:
        ap.error(str(e))
    write_results(args.out, result, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
