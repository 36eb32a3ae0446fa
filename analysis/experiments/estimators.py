"""ZO estimators at equal forward passes: central SPSA against FZOO-style steps and forward
gradients, over learning rates and seeds (centralized ``fedzo train`` runs).

Each estimator gets the same number of forward passes: central SPSA (q = 1) costs 2 per
step, ``fzoo`` with q directions costs q + 1, so it takes ``forwards / (q + 1)`` steps.
A ``forward-grad`` step (q = 1) is one forward with tangents; on all weights its FLOPs are
those of 3 forwards (the forward, the activations' tangents, the weights' tangents), so
it is charged 3 and takes ``forwards / 3`` steps.
Each (estimator, lr, seed) is one run; the best lr of each estimator (by mean accuracy
over the seeds) is reported with its spread. Run directories go to ``--work`` (default
``runs/estimators``)::

    python -m analysis.experiments.estimators --out analysis/results/estimators

defaults to the tiny model on the large synthetic task (seconds per run, no assets):
an anecdote for ranking methods, not a claim about SmolLM2 (pass ``--model`` and
``--task`` for that). Finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from analysis.experiments.common import run_fedzo, write_results
from fedzo.archives import locate

LRS: dict[str, tuple[float, ...]] = {"central": (3e-4, 1e-3, 3e-3), "fzoo": (1e-3, 3e-3, 1e-2),
                                     "forward-grad": (3e-4, 1e-3, 3e-3)}


def forwards_per_step(estimator: str, q: int) -> int:
    """Forward passes charged to one step (a tangent forward on all weights counts 3)."""
    return {"central": 2, "fzoo": q + 1, "forward-grad": 3}[estimator]


def one_run(out: Path, a: argparse.Namespace, estimator: str, lr: float, seed: int) -> dict[str, Any]:
    """One centralized run (reused when finished); its final accuracy."""
    q = a.q if estimator == "fzoo" else 1
    steps = a.forwards // forwards_per_step(estimator, q)
    run = locate(Path(a.work) / f"{estimator}-{lr:g}-s{seed}")  # on disk, or packed in its runs.zip
    if not (run / "summary.json").exists():
        run_fedzo(run, "train", "--model", a.model, "--task", a.task, "--train-examples", str(a.train_examples),
                  "--eval-examples", str(a.eval_examples), "--estimator", estimator, "--q", str(q),
                  "--distribution", "rademacher", "--lr", f"{lr:g}", "--steps", str(steps), "--eval-every",
                  str(steps), "--threads", "1", "--seed", str(seed), "--no-progress", "--force", "--out", str(run))
    s = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return {"estimator": estimator, "q": q, "lr": lr, "seed": seed, "steps": steps,
            "forwards": steps * forwards_per_step(estimator, q),
            "initial_accuracy": s["initial_accuracy"], "final_accuracy": s["final_accuracy"], "eval_n": s["eval_n"]}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per estimator and lr: mean and sd over seeds; per estimator: the best lr."""
    cells: dict[str, dict[str, Any]] = {}
    for est, lrs in LRS.items():
        by_lr = {}
        for lr in lrs:
            accs = [r["final_accuracy"] for r in rows if r["estimator"] == est and r["lr"] == lr]
            if accs:
                by_lr[f"{lr:g}"] = {"mean": statistics.fmean(accs), "sd": statistics.stdev(accs) if len(accs) > 1
                                    else 0.0, "n_seeds": len(accs)}
        if by_lr:
            best = max(by_lr, key=lambda k: by_lr[k]["mean"])
            cells[est] = {"by_lr": by_lr, "best_lr": best, "best": by_lr[best]}
    return cells


def format_table(r: dict[str, Any]) -> str:
    """Markdown: accuracy per estimator and lr (mean ± sd over seeds), best lr marked."""
    lines = [(f"{r['model']} on {r['task']}, {r['forwards']} forward passes per run, accuracy on {r['eval_examples']} "
             f"examples, seeds {r['seeds']} (mean ± sd; best lr in bold):"), "",
             "| estimator | directions per step | lr | accuracy |", "|---|---|---|---|"]
    for est, c in r["summary"].items():
        q = r["q"] if est == "fzoo" else 1
        for lr, v in c["by_lr"].items():
            acc = f"{v['mean']:.3f} ± {v['sd']:.3f}"
            lines.append(f"| {est} | {q} | {lr} | {f'**{acc}**' if lr == c['best_lr'] else acc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every (estimator, lr, seed), then tabulate."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/estimators")
    p.add_argument("--work", default="runs/estimators", help="where the run directories go (reused when finished)")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--task", default="synthetic-sentiment-large")
    p.add_argument("--train-examples", type=int, default=2000)
    p.add_argument("--eval-examples", type=int, default=500)
    p.add_argument("--forwards", type=int, default=800, help="forward passes per run")
    p.add_argument("--q", type=int, default=4, help="directions per fzoo step")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a = p.parse_args(argv)
    out = Path(a.out)
    rows = [one_run(out, a, est, lr, seed) for seed in a.seeds for est in LRS for lr in LRS[est]]
    result = {"command": " ".join(["python -m analysis.experiments.estimators", *(sys.argv[1:] if argv is None
                                                                                   else argv)]),
              "model": a.model, "task": a.task, "forwards": a.forwards, "q": a.q, "eval_examples": a.eval_examples,
              "seeds": a.seeds, "runs": rows, "summary": summarize(rows)}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
