"""Server optimizers (plain ZO-SGD, FedAvgM, FedAdam) on one federated scenario, over
learning rates and seeds.

``scenarios/server-optimizers-tiny.yaml`` (tiny model, LoRA r8, 20 clients, 5 per round,
40 rounds, ``catch_up: auto``) runs once per (server optimizer, learning rate, seed)::

    python -m analysis.experiments.server_optimizers --out analysis/results/server_optimizers

The learning rate searched is the one that sets each method's step: the clients' lr for
``none`` and ``momentum`` (server lr 1, momentum 0.9), the server's lr for ``adam`` (its
step per coordinate; clients at lr 0.01). ``results.json`` holds per run the final
accuracy on the 500 held-out examples (95 % Wilson interval), the bytes both ways (the
buffers travel with ``full`` catch-ups), the simulated seconds and the modelled client
memory; ``table.md`` the mean and standard deviation over seeds per cell, best lr of each
method in bold. Runs go to ``--work`` (default ``runs/server_optimizers``) and are reused.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import run_scenario, write_results

SCENARIO = "scenarios/server-optimizers-tiny.yaml"
# method: (the lr searched, its values, fixed settings of the other lrs)
GRID: dict[str, tuple[str, tuple[float, ...], dict[str, Any]]] = {
    "none": ("client", (3e-3, 1e-2, 3e-2), {}),
    "momentum": ("client", (1e-3, 3e-3, 1e-2), {"momentum": 0.9, "lr": 1.0}),
    "adam": ("server", (3e-3, 1e-2, 3e-2), {"client_lr": 1e-2}),
}


def overrides(method: str, lr: float, seed: int, small: bool) -> dict[str, Any]:
    """Scenario sections for one cell (``small``: 2 rounds on 64/32 examples, for tests)."""
    which, _, fixed = GRID[method]
    settings = {k: v for k, v in fixed.items() if k != "client_lr"}
    if which == "server":
        settings["lr"] = lr
    client_lr = lr if which == "client" else fixed["client_lr"]
    fed: dict[str, Any] = {"server_optimizer": {"name": method, **settings}}
    out: dict[str, Any] = {"seed": seed, "optimizer": {"name": "zo-sgd", "lr": client_lr}, "federation": fed}
    if small:
        fed.update(rounds=2, eval_every=2)
        out["data"] = {"train_examples": 64, "eval_examples": 32}
    return out


def one_run(work: Path, method: str, lr: float, seed: int, small: bool = False) -> dict[str, Any]:
    """One run's figures (reused when finished)."""
    from fedzo.stats import wilson_interval

    name = f"{method}-{lr:g}-s{seed}"
    s = run_scenario(SCENARIO, work / name, overrides=overrides(method, lr, seed, small))
    acc, n = s["final_accuracy"], s["eval_n"]
    memory = s.get("modelled_client_memory_bytes") or {}
    return {"run": name, "method": method, "lr": lr, "seed": seed, "final_accuracy": acc,
            "interval": list(wilson_interval(acc, n)), "eval_n": n, "initial_accuracy": s["initial_accuracy"],
            "bytes_down": s["bytes_down"], "bytes_up": s["bytes_up"], "sim_seconds": s["sim_seconds"],
            "modelled_client_memory_bytes": max(memory.values()) if memory else None,
            "model_sha256": s["model_sha256"]}


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and lr: accuracy, bytes down and simulated time over seeds; per method the best lr."""
    cells: dict[str, Any] = {}
    for method, (_, lrs, _) in GRID.items():
        by_lr = {}
        for lr in lrs:
            runs = [r for r in rows if r["method"] == method and r["lr"] == lr]
            if runs:
                by_lr[f"{lr:g}"] = {"accuracy": _spread([r["final_accuracy"] for r in runs]),
                                    "bytes_down": _spread([r["bytes_down"] for r in runs]),
                                    "bytes_up": _spread([r["bytes_up"] for r in runs]),
                                    "sim_seconds": _spread([r["sim_seconds"] for r in runs]),
                                    "modelled_client_memory_bytes": runs[0]["modelled_client_memory_bytes"],
                                    "n_seeds": len(runs)}
        if by_lr:
            best = max(by_lr, key=lambda k: by_lr[k]["accuracy"]["mean"])
            cells[method] = {"lr_searched": GRID[method][0], "by_lr": by_lr, "best_lr": best}
    return cells


def format_table(r: dict[str, Any]) -> str:
    """Markdown: accuracy, bytes down, simulated time and client memory per method and lr."""
    head = (f"{r['scenario']} ({r['rounds']} rounds), accuracy on {r['eval_examples']} examples, seeds {r['seeds']} "
            f"(mean ± sd over seeds; best lr of each method in bold). Initial accuracy {r['initial_accuracy']:.3f}.")
    lines = [head, "",
             "| server optimizer | lr searched | lr | accuracy | MB down | simulated min | modelled client memory |",
             "|---|---|---|---|---|---|---|"]
    none_cells: dict[str, dict[str, Any]] = r["summary"].get("none", {}).get("by_lr", {})
    plain = next(iter(none_cells.values()), {}).get("modelled_client_memory_bytes")
    for method, c in r["summary"].items():
        for lr, v in c["by_lr"].items():
            acc = f"{v['accuracy']['mean']:.3f} ± {v['accuracy']['sd']:.3f}"
            mem = v["modelled_client_memory_bytes"]
            extra = f" (+{(mem - plain) / 1e3:.1f} kB buffers)" if mem and plain and mem > plain else ""
            lines.append(f"| {method} | {c['lr_searched']} | {lr} | {f'**{acc}**' if lr == c['best_lr'] else acc} | "
                         f"{v['bytes_down']['mean'] / 1e6:.2f} | {v['sim_seconds']['mean'] / 60:.1f} | "
                         f"{'-' if mem is None else f'{mem / 1e6:.1f} MB{extra}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every (method, lr, seed), then tabulate."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/server_optimizers")
    p.add_argument("--work", default="runs/server_optimizers", help="where the run directories go (reused)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="2 rounds on 64/32 examples, the first lr of each method "
                   "(checks the pipeline; no figure to report)")
    a = p.parse_args(argv)
    from fedzo.config.scenario import load_scenario

    work = Path(a.work)
    rows = [one_run(work, m, lr, seed, a.smoke) for seed in a.seeds for m, (_, lrs, _) in GRID.items()
            for lr in (lrs[:1] if a.smoke else lrs)]
    result = {"command": " ".join(["python -m analysis.experiments.server_optimizers",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "scenario": SCENARIO, "rounds": 2 if a.smoke else load_scenario(SCENARIO).federation.rounds,
              "eval_examples": rows[0]["eval_n"], "seeds": a.seeds,
              "initial_accuracy": rows[0]["initial_accuracy"], "runs": rows, "summary": summarize(rows)}
    write_results(Path(a.out), result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
