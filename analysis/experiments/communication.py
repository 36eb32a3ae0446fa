"""Experiment 3: communication. Bytes to reach a target accuracy: seeds and scalars vs FedAvg,
over several seeds.

Four runs on one fleet, data and evaluation (``scenarios/communication.yaml``): ZO with
``replay`` catch-up (DeComFL-style) and with ``seed_pool`` catch-up (FedKSeed-style),
and FedAvg (Flower's strategy, Adam, one local epoch) with LoRA adapters and with full
weights. Bytes are every message as Flower carries it on the wire (handshake included,
by kind in ``bytes_by_kind``), up and down, for the whole fleet and per client (fleet
total / number of clients). Each seed (which also draws the task's split and the
sampling) runs every variant, then evaluates its final global model on the
1000-sentence test split::

    python -m analysis.experiments.communication --out analysis/results/communication --seeds 0 1 2

writes ``results.json``, ``table.md`` and ``accuracy_vs_bytes.png`` into OUT for the seeds
given. Runs and evaluations are resumable and reused, so seeds can be spread over
invocations (``--seeds 0`` now, ``--seeds 0 1`` later reruns nothing of seed 0).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import cached_evaluation, run_scenario, spread, write_results
from fedzo.config.scenario import load_scenario
from fedzo.reporting.rundir import Run, load_run

FEDAVG = {"federation": {"fo_local_epochs": 1, "eval_every": 1}}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "zo-replay": ("ZO seeds+scalars, replay catch-up", {}),
    "zo-seed-pool": ("ZO seeds+scalars, seed-pool catch-up", {"federation": {"catch_up": "seed_pool"}}),
    "fedavg-lora": ("FedAvg, LoRA r8", {**FEDAVG, "model": {"peft": "lora"},
                                        "optimizer": {"name": "fo-adam", "lr": 5e-4}}),
    "fedavg-full": ("FedAvg, full weights", {**FEDAVG, "model": {"peft": "full"},
                                             "optimizer": {"name": "fo-adam", "lr": 1e-5}}),
}


def bytes_to_target(run: Run, target: float) -> dict[str, Any] | None:
    """Cumulative bytes and round at the first evaluation reaching ``target``, or None."""
    for r in run.eval_rounds:
        if r.eval_accuracy is not None and r.eval_accuracy >= target:
            return {"round": r.round, "bytes_up": r.bytes_up_total or 0, "bytes_down": r.bytes_down_total or 0,
                    "bytes_total": r.bytes_total or 0.0, "accuracy": r.eval_accuracy}
    return None


def one_run(name: str, scenario: str, root: Path, seed: int, a: argparse.Namespace) -> tuple[dict[str, Any], Run]:
    """Run one variant with ``seed``; its bytes, bytes to each target and test accuracy."""
    from fedzo.stats import wilson_interval

    over = {**VARIANTS[name][1], "name": f"communication-{name}", "seed": seed,
            **({"runtime": {"threads": a.threads}} if a.threads else {})}
    if name.startswith("fedavg"):
        over["federation"] = {**over["federation"], "rounds": a.fedavg_rounds}
    out = root / f"seed{seed}" / name
    s = run_scenario(scenario, out, overrides=over)
    run = load_run(out)
    clients = [c for c in run.clients if c.status == "ok"]
    row: dict[str, Any] = {
        "seed": seed, "rounds": s.get("rounds") or max((c.round for c in clients), default=0),
        "initial_accuracy": s["initial_accuracy"], "final_accuracy": s["final_accuracy"],
        "bytes_up": s["bytes_up"], "bytes_down": s["bytes_down"], "bytes_by_kind": s.get("bytes_by_kind", {}),
        "client_rounds": len(clients), "host_seconds": s.get("host_seconds"), "sim_seconds": s.get("sim_seconds"),
        "to_target": {str(t): bytes_to_target(run, t) for t in a.targets}}
    if not a.skip_test:
        test = cached_evaluation(root / f"seed{seed}" / f"{name}.test.json", out, "--run", str(out))
        row.update(test_accuracy=test["accuracy"], test_n=test["n"],
                   test_interval=list(wilson_interval(test["accuracy"], test["n"])))
    return row, run


def summarize(runs: dict[str, list[dict[str, Any]]], targets: list[float]) -> dict[str, Any]:
    """Per variant over the seeds: accuracies, bytes per client-round and to each target."""
    out: dict[str, Any] = {}
    for name, rows in runs.items():
        per_cr = [((r["bytes_up"] / max(r["client_rounds"], 1)), r["bytes_down"] / max(r["client_rounds"], 1))
                  for r in rows]
        hits = {str(t): [r["to_target"][str(t)] for r in rows] for t in targets}
        out[name] = {
            "label": VARIANTS[name][0],
            "final_dev_accuracy": spread([r["final_accuracy"] for r in rows]),
            "test_accuracy": spread([r["test_accuracy"] for r in rows]) if "test_accuracy" in rows[0] else None,
            "bytes_total": spread([r["bytes_up"] + r["bytes_down"] for r in rows]),
            "bytes_up_per_client_round": spread([u for u, _ in per_cr]),
            "bytes_down_per_client_round": spread([d for _, d in per_cr]),
            "to_target": {t: {"reached": sum(h is not None for h in hs), "of": len(hs),
                              "bytes_total": spread([h["bytes_total"] for h in hs if h]) if any(hs) else None}
                          for t, hs in hits.items()}}
    return out


def _mb(b: float) -> str:
    return f"{b / 1e3:,.1f} KB" if b < 1e6 else f"{b / 1e6:,.1f} MB"


def _pm(s: dict[str, float] | None, fmt: str = ".3f") -> str:
    return "-" if s is None else f"{s['mean']:{fmt}} ± {s['sd']:{fmt}}"


def format_table(result: dict[str, Any]) -> str:
    """Markdown: per variant over the seeds, accuracy and bytes; bytes to each target."""
    n, seeds, summ = result["num_clients"], result["seeds"], result["summary"]
    lines = [(f"Seeds {', '.join(map(str, seeds))} (mean ± sd; test: 1000 sentences, each run's 95 % interval "
             "about ±2.6 points; dev: 200 sentences). Bytes: every message as Flower carries it, handshake included."),
             "", ("| run | rounds | test acc. | final dev acc. | bytes per client-round (up / down) | fleet total | "
             "per client |"), "|---|---|---|---|---|---|---|"]
    for name, v in summ.items():
        rounds = result["runs"][name][0]["rounds"]
        total = v["bytes_total"]["mean"]
        lines.append(f"| {v['label']} | {rounds} | {_pm(v['test_accuracy'])} | {_pm(v['final_dev_accuracy'])} | "
                     f"{v['bytes_up_per_client_round']['mean']:,.0f} B / "
                     f"{v['bytes_down_per_client_round']['mean']:,.0f} B | {_mb(total)} | {_mb(total / n)} |")
    for t in result["targets"]:
        lines += ["", f"To reach dev accuracy {t:.2f} (mean over the seeds that reached it):", "",
                  "| run | seeds reaching it | fleet bytes | per client | vs ZO replay |", "|---|---|---|---|---|"]
        ref = summ.get("zo-replay", {}).get("to_target", {}).get(str(t), {}).get("bytes_total")
        for v in summ.values():
            hit = v["to_target"][str(t)]
            if hit["bytes_total"] is None:
                lines.append(f"| {v['label']} | 0 of {hit['of']} (not reached) | | | |")
                continue
            b = hit["bytes_total"]["mean"]
            x = b / ref["mean"] if ref and ref["mean"] else None
            ratio = "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:,.0f}x"
            lines.append(f"| {v['label']} | {hit['reached']} of {hit['of']} | {_mb(b)} | {_mb(b / n)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the variants for every seed, then tabulate and plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/communication")
    p.add_argument("--scenario", default="scenarios/communication.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", type=float, nargs="+", default=[0.78, 0.80, 0.86])
    p.add_argument("--fedavg-rounds", type=int, default=1, help="rounds of the FedAvg runs (backprop is slow here)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every run (default: the scenario's)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--skip-test", action="store_true", help="leave out the test-split evaluation")
    a = p.parse_args(argv)
    out = Path(a.out)
    t0 = time.perf_counter()
    base = load_scenario(a.scenario)
    runs: dict[str, list[dict[str, Any]]] = {}
    loaded: list[Run] = []
    labels: list[str] = []
    for seed in a.seeds:
        for name in a.variants:
            row, run = one_run(name, a.scenario, out / "runs", seed, a)
            runs.setdefault(name, []).append(row)
            loaded.append(run)
            labels.append(f"{VARIANTS[name][0]}, seed {seed}")
    from fedzo.reporting.plots import PNG_DPI, accuracy_vs_bytes

    fig = accuracy_vs_bytes(loaded, labels, print)
    if fig is not None:
        fig.axes[0].set_title("Accuracy vs bytes communicated (fleet total, up + down)")
        fig.savefig(out / "accuracy_vs_bytes.png", dpi=PNG_DPI, bbox_inches="tight")
    result = {"command": " ".join(["python -m analysis.experiments.communication",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "num_clients": base.federation.num_clients, "targets": a.targets, "seeds": a.seeds, "runs": runs,
              "summary": summarize(runs, a.targets), "seconds_this_invocation": time.perf_counter() - t0}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
