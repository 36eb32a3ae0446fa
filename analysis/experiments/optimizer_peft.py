"""Experiment 2: the optimizer x fine-tuning table (ZO-Bench style, at a CPU-sized scale).

Every optimizer fedzo has (five ZO, two backprop) with each of full, LoRA and prefix
tuning, on one task and model, the same step budget for all. Each cell is a centralized
``fedzo train`` run in its own process, so the process's peak RSS is that configuration's
peak memory; the table also shows the memory model's prediction for the same batch.

Runs land in ``OUT/runs/<optimizer>-<peft>``; a cell whose ``summary.json`` exists is
not rerun, and an interrupted cell is resumed, so the whole table is resumable::

    python -m analysis.experiments.optimizer_peft --out analysis/results/optimizer_peft

writes ``results.json`` and ``table.md`` into OUT. Learning rates are one fixed value
per (optimizer family, tuning mode), listed in :data:`LEARNING_RATES`; nothing is tuned
per cell.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, cast

from analysis.experiments.common import run_fedzo, write_results
from fedzo.archives import locate

OPTIMIZERS = ("zo-sgd", "zo-sgd-sign", "zo-sgd-mmt", "zo-sgd-cons", "zo-adam", "fo-sgd", "fo-adam")
PEFTS = ("full", "lora", "prefix")

# One learning rate per (optimizer family, tuning mode). ZO-SGD-style values follow
# MeZO's ranges (full 1e-6 .. 1e-7; a few trainable parameters take far larger steps);
# sign and Adam updates move every element by about lr, so they get smaller values.
LEARNING_RATES: dict[str, dict[str, float]] = {
    "zo-sgd": {"full": 1e-6, "lora": 1e-4, "prefix": 1e-3},
    "zo-sgd-sign": {"full": 1e-7, "lora": 1e-5, "prefix": 1e-4},
    "zo-adam": {"full": 1e-7, "lora": 1e-5, "prefix": 1e-4},
    "fo-sgd": {"full": 1e-3, "lora": 1e-2, "prefix": 1e-2},
    "fo-adam": {"full": 1e-5, "lora": 5e-4, "prefix": 1e-3},
}
EPS = {"full": 1e-3, "lora": 1e-2, "prefix": 1e-2}


def learning_rate(optimizer: str, peft: str) -> float:
    """The fixed learning rate of one cell (MMT and Cons share ZO-SGD's)."""
    family = "zo-sgd" if optimizer in ("zo-sgd-mmt", "zo-sgd-cons") else optimizer
    return LEARNING_RATES[family][peft]


def cell_args(optimizer: str, peft: str, a: argparse.Namespace) -> list[str]:
    """`fedzo train` flags of one cell."""
    return [
        "--model", a.model, "--task", a.task, "--peft", peft, "--optimizer", optimizer,
        "--lr", str(learning_rate(optimizer, peft)), "--eps", str(EPS[peft]),
        "--steps", str(a.steps), "--batch-size", str(a.batch_size), "--eval-every", str(a.steps),
        "--eval-split", "dev", "--eval-examples", str(a.eval_examples),
        "--eval-batch-size", str(a.eval_batch_size), "--threads", str(a.threads), "--seed", str(a.seed),
        "--name", f"{optimizer}-{peft}",
    ] + (["--compile"] if optimizer.startswith("zo-") and a.compile else [])


def predicted_memory(a: argparse.Namespace, optimizer: str, peft: str) -> int | None:
    """The memory model's peak for this cell (batch x seq tokens), or None if unknown."""
    try:
        from fedzo.devices.architectures import model_config
        from fedzo.devices.memory import Mode, Optimizer, PeftMode, estimate_memory

        mode: Mode = "bp" if optimizer.startswith("fo-") else "zo"
        opt: Optimizer = "adam" if optimizer.endswith("adam") else "sgd"
        return int(estimate_memory(model_config(a.model), mode, batch=a.batch_size, seq=a.seq,
                                   peft=cast(PeftMode, peft), optimizer=opt).total)
    except Exception:  # noqa: BLE001 -- an architecture the memory model does not know
        return None


def run_cell(optimizer: str, peft: str, a: argparse.Namespace, runs: Path) -> dict[str, Any]:
    """Run (or resume, or reuse) one cell; returns its table row."""
    out = locate(runs / f"{optimizer}-{peft}")  # on disk, or packed in runs.zip
    summary = out / "summary.json"
    row: dict[str, Any] = {"optimizer": optimizer, "peft": peft, "lr": learning_rate(optimizer, peft),
                           "eps": EPS[peft] if optimizer.startswith("zo-") else None,
                           "predicted_memory_bytes": predicted_memory(a, optimizer, peft)}
    if not summary.exists():
        args = ["train", "--no-progress", *(["--resume", str(out)] if (out / "metrics.jsonl").exists()
                                             else [*cell_args(optimizer, peft, a), "--out", str(out)])]
        print(f"[{optimizer}-{peft}] fedzo {' '.join(args)}", flush=True)
        t0 = time.perf_counter()
        try:
            run_fedzo(out, *args)
        except RuntimeError as exc:  # one failed cell is a row of the table, not the end of it
            row["error"] = str(exc)
            print(f"[{optimizer}-{peft}] failed: {row['error']}", flush=True)
            return row
        finally:
            row["wall_seconds"] = time.perf_counter() - t0
    s = json.loads(summary.read_text(encoding="utf-8"))
    row.update(initial_accuracy=s.get("initial_accuracy"), final_accuracy=s.get("final_accuracy"),
               peak_memory_bytes=s.get("peak_client_memory_bytes"),
               seconds_per_step=s["host_seconds"] / s["steps"] if s.get("steps") else None)
    print(f"[{optimizer}-{peft}] accuracy {row['initial_accuracy']} -> {row['final_accuracy']}, "
          f"{row['seconds_per_step']:.2f} s/step", flush=True)
    return row


def _mb(v: Any) -> str:
    return "-" if v is None else f"{v / 1e6:,.0f}"


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of the rows (one line per cell)."""
    s = result["settings"]
    lines = [(f"{s['model']} on {s['task']}: {s['steps']} steps of batch {s['batch_size']}, accuracy on the "
             f"first {s['eval_examples']} dev examples, {s['threads']} CPU threads."), "",
             "| optimizer | tuning | lr | accuracy (start -> end) | peak RSS MB (measured) | model MB (predicted) | s/step |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['optimizer']} | {r['peft']} | {r['lr']:g} | failed: {r['error']} | | | |")
            continue
        acc = f"{r['initial_accuracy']:.3f} -> {r['final_accuracy']:.3f}"
        lines.append(f"| {r['optimizer']} | {r['peft']} | {r['lr']:g} | {acc} | {_mb(r['peak_memory_bytes'])} | "
                     f"{_mb(r['predicted_memory_bytes'])} | {r['seconds_per_step']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every cell, then write results.json and table.md."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/optimizer_peft")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten-tomatoes")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq", type=int, default=64, help="tokens per example for the memory prediction")
    p.add_argument("--eval-examples", type=int, default=100)
    p.add_argument("--eval-batch-size", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="do not compile the ZO direction generator (compiling costs seconds once, saves them per step)")
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--pefts", nargs="+", default=list(PEFTS), choices=PEFTS)
    a = p.parse_args(argv)
    out = Path(a.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = [run_cell(o, f, a, out / "runs") for f in a.pefts for o in a.optimizers]
    settings = {k: getattr(a, k) for k in ("model", "task", "steps", "batch_size", "seq", "eval_examples", "threads",
                                           "seed", "compile")}
    result = {"settings": settings, "rows": rows, "seconds_this_invocation": time.perf_counter() - t0}
    write_results(out, result, format_table)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
