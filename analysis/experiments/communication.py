"""Experiment 3: communication. Bytes to reach a target accuracy: seeds and scalars vs FedAvg.

Four runs on one fleet, data and evaluation (``scenarios/communication.yaml``): ZO with
``replay`` catch-up (DeComFL-style) and with ``seed_pool`` catch-up (FedKSeed-style),
and FedAvg (Flower's strategy, Adam, one local epoch) with LoRA adapters and with full
weights. Bytes are the serialized message payloads the runs counted, up and down, for
the whole fleet and per client (fleet total / number of clients)::

    python -m analysis.experiments.communication --out analysis/results/communication

writes ``results.json``, ``table.md`` and ``accuracy_vs_bytes.png`` into OUT. Runs are
resumable: finished runs are reused, cut ones resumed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import run_scenario, write_results
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


def _mb(b: float) -> str:
    return f"{b / 1e3:,.1f} KB" if b < 1e6 else f"{b / 1e6:,.1f} MB"


def format_table(result: dict[str, Any]) -> str:
    """Markdown: totals per run and bytes to each target."""
    n = result["num_clients"]
    lines = ["| run | rounds | initial acc. | final acc. | bytes per client-round (up / down) | fleet total | "
             "per client |", "|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        cr = max(r["client_rounds"], 1)
        lines.append(f"| {r['label']} | {r['rounds']} | {r['initial_accuracy']:.3f} | {r['final_accuracy']:.3f} | "
                     f"{r['bytes_up'] / cr:,.0f} B / {r['bytes_down'] / cr:,.0f} B | "
                     f"{_mb(r['bytes_up'] + r['bytes_down'])} | {_mb((r['bytes_up'] + r['bytes_down']) / n)} |")
    for t in result["targets"]:
        lines += ["", f"To reach dev accuracy {t:.2f}:", "", "| run | round | fleet bytes | per client | vs ZO replay |",
                  "|---|---|---|---|---|"]
        ref = result["runs"].get("zo-replay", {}).get("to_target", {}).get(str(t))
        for name, r in result["runs"].items():
            hit = r["to_target"].get(str(t))
            if hit is None:
                lines.append(f"| {r['label']} | not reached | | | |")
                continue
            x = hit["bytes_total"] / ref["bytes_total"] if ref and ref["bytes_total"] else None
            ratio = "-" if x is None else f"{x:.2f}x" if x < 10 else f"{x:,.0f}x"
            lines.append(f"| {r['label']} | {hit['round']} | {_mb(hit['bytes_total'])} | "
                         f"{_mb(hit['bytes_total'] / n)} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the four variants, then tabulate and plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/communication")
    p.add_argument("--scenario", default="scenarios/communication.yaml")
    p.add_argument("--targets", type=float, nargs="+", default=[0.78, 0.80, 0.86])
    p.add_argument("--fedavg-rounds", type=int, default=1, help="rounds of the FedAvg runs (backprop is slow here)")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every run (default: the scenario's)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = p.parse_args(argv)
    out = Path(a.out)
    t0 = time.perf_counter()
    base = load_scenario(a.scenario)
    runs: dict[str, Any] = {}
    loaded: list[Run] = []
    for name in a.variants:
        label, over = VARIANTS[name]
        over = {**over, "name": f"communication-{name}", **({"runtime": {"threads": a.threads}} if a.threads else {})}
        if name.startswith("fedavg"):
            over["federation"] = {**over["federation"], "rounds": a.fedavg_rounds}
        run_dir = out / "runs" / name
        s = run_scenario(a.scenario, run_dir, overrides=over)
        run = load_run(run_dir)
        loaded.append(run)
        clients = [c for c in run.clients if c.status == "ok"]
        runs[name] = {"label": label, "rounds": s.get("rounds") or max((c.round for c in clients), default=0),
                      "initial_accuracy": s["initial_accuracy"], "final_accuracy": s["final_accuracy"],
                      "bytes_up": s["bytes_up"], "bytes_down": s["bytes_down"],
                      "bytes_by_kind": s.get("bytes_by_kind", {}), "client_rounds": len(clients),
                      "host_seconds": s.get("host_seconds"),
                      "to_target": {str(t): bytes_to_target(run, t) for t in a.targets}}
    from fedzo.reporting.plots import PNG_DPI, accuracy_vs_bytes

    fig = accuracy_vs_bytes(loaded, [runs[n]["label"] for n in runs], print)
    if fig is not None:
        fig.axes[0].set_title("Accuracy vs bytes communicated (fleet total, up + down)")
        fig.savefig(out / "accuracy_vs_bytes.png", dpi=PNG_DPI, bbox_inches="tight")
    result = {"num_clients": base.federation.num_clients, "targets": a.targets, "runs": runs,
              "seconds_this_invocation": time.perf_counter() - t0}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
