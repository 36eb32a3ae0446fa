"""Does ZO learn in half precision? The same federated run in fp32 and in bf16, several seeds.

In bf16 a weight keeps 8 significant bits: a ZO update of ``lr x g x z`` smaller than half a
unit in the last place of the weight is rounded away, and the ``+eps, -2 eps, +eps``
round trip of each step leaves its own rounding behind (replayed bitwise by the server, so
the federation stays exact, but the model drifts). This experiment measures what that
costs: the tiny model on the large synthetic sentiment task, 20 clients x 40 rounds x 3 ZO
steps on all weights (the setting of ``tests/federation/test_learning.py``), once per
dtype and seed, each final model evaluated on 750 held-out examples::

    python -m analysis.experiments.precision --out analysis/results/precision --seeds 0 1 2

writes ``results.json`` and ``table.md`` into OUT. Each row reports the mean final
accuracy with its standard deviation over seeds, every seed's accuracy with its 95 %
Wilson interval, the memory model's peak of one client and the simulated seconds. Runs
are cached in OUT/runs (a rerun reuses finished runs; an interrupted one resumes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import write_results
from fedzo.archives import locate
from fedzo.bench.faults import tiny_run_config
from fedzo.federation.run import run_federated
from fedzo.records import Summary
from fedzo.stats import wilson_interval

DTYPES = ("fp32", "bf16")


def one_run(dtype: str, seed: int, out: Path, rounds: int, eval_n: int) -> dict[str, Any]:
    """One seeded run in ``dtype`` (reused when OUT/runs holds its finished summary)."""
    run = locate(out / "runs" / f"{dtype}-seed{seed}")  # on disk, or packed in runs.zip
    done = run / "summary.json"
    if done.exists():
        summary = Summary.model_validate_json(done.read_text(encoding="utf-8"))
    else:
        cfg = tiny_run_config(rounds=rounds, num_clients=20, lr=1e-3, train_examples=2000, eval_examples=eval_n,
                              eval_every=rounds)
        cfg = cfg.model_copy(update={"name": f"precision-{dtype}", "seed": seed,
                                     "model": cfg.model.model_copy(update={"dtype": dtype})})
        summary = run_federated(cfg, run, progress="none", resume=run.exists())
    assert summary.final_accuracy is not None and summary.initial_accuracy is not None
    lo, hi = wilson_interval(summary.final_accuracy, eval_n)
    memory = max(summary.modelled_client_memory_bytes.values(), default=0)
    return {"dtype": dtype, "seed": seed, "initial_accuracy": summary.initial_accuracy,
            "final_accuracy": summary.final_accuracy, "interval": [lo, hi], "eval_n": eval_n,
            "modelled_client_memory_bytes": memory, "sim_seconds": summary.sim_seconds,
            "model_sha256": summary.model_sha256}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per dtype: mean and spread of the final accuracy over seeds."""
    rows = []
    for dtype in DTYPES:
        mine = [r for r in runs if r["dtype"] == dtype]
        if not mine:
            continue
        acc = [r["final_accuracy"] for r in mine]
        rows.append({"dtype": dtype, "seeds": [r["seed"] for r in mine], "mean": statistics.fmean(acc),
                     "stdev": statistics.stdev(acc) if len(acc) > 1 else None,
                     "initial_mean": statistics.fmean(r["initial_accuracy"] for r in mine),
                     "modelled_client_memory_bytes": mine[0]["modelled_client_memory_bytes"],
                     "sim_seconds_mean": statistics.fmean(r["sim_seconds"] for r in mine)})
    return rows


def format_table(result: dict[str, Any]) -> str:
    """Markdown: one row per dtype, then every run."""
    lines = ["| dtype | seeds | initial | final (mean ± sd) | client memory (modelled) | simulated s |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sd = f" ± {r['stdev']:.3f}" if r["stdev"] is not None else ""
        lines.append(f"| {r['dtype']} | {len(r['seeds'])} | {r['initial_mean']:.3f} | {r['mean']:.3f}{sd} | "
                     f"{r['modelled_client_memory_bytes'] / 1e6:.1f} MB | {r['sim_seconds_mean']:.1f} |")
    lines += ["", "| dtype | seed | final | 95 % interval (n) |", "|---|---|---|---|"]
    for r in result["runs"]:
        lo, hi = r["interval"]
        lines.append(f"| {r['dtype']} | {r['seed']} | {r['final_accuracy']:.3f} | [{lo:.3f}, {hi:.3f}] "
                     f"({r['eval_n']}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every dtype for every seed and write the results."""
    p = argparse.ArgumentParser(prog="python -m analysis.experiments.precision", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("analysis/results/precision"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--eval-examples", type=int, default=750, help="held-out examples each final model is scored on")
    a = p.parse_args(argv)
    runs = [one_run(dtype, seed, a.out, a.rounds, a.eval_examples) for seed in a.seeds for dtype in DTYPES]
    result = {"command": "python -m analysis.experiments.precision " + " ".join(sys.argv[1:] if argv is None else argv),
              "setting": {"model": "tiny-llama", "task": "synthetic-sentiment-large", "clients": 20,
                          "rounds": a.rounds, "local_steps": 3, "lr": 1e-3, "eval_n": a.eval_examples},
              "runs": runs, "rows": summarize(runs)}
    write_results(a.out, result, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
