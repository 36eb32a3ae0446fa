"""The quickstart's figures, over several seeds: what the README's quickstart table reports.

For each seed, ``scenarios/quickstart.yaml`` runs with that seed (the seed also draws the
task's train/dev/test split), then the rebuilt global model and the best zero-shot prompt
are evaluated on the 1000-sentence test split of that seed::

    python -m analysis.experiments.quickstart --out analysis/results/quickstart

writes ``results.json`` and ``table.md`` into OUT: per seed, the dev accuracies of the
run's evaluation rounds and the test accuracies with their 95 % Wilson intervals, the
simulated and host seconds, the bytes by kind and the model hash; over the seeds, the mean
and standard deviation of the test gain. Finished runs and evaluations are reused.
``--dtype bf16 --out analysis/results/quickstart-bf16`` runs it in half precision, ``--lr 0.01
--out analysis/results/quickstart-lr0.01`` at another learning rate.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import cached_evaluation, run_scenario, write_results

PROMPT = "chat"  # the best zero-shot prompt of SmolLM2-135M on Rotten Tomatoes


def one_seed(scenario: str, root: Path, seed: int, dtype: str | None = None, lr: float | None = None) -> dict[str, Any]:
    """Run, evaluate and summarize the quickstart with ``seed`` (and ``model.dtype``, the
    zero-shot baseline evaluated in the same dtype; ``lr``: the optimizer's learning rate)."""
    from fedzo.runs import RunDir
    from fedzo.stats import wilson_interval

    out = root / f"seed{seed}"
    t0 = time.perf_counter()
    overrides: dict[str, Any] = {"seed": seed}
    if dtype:
        overrides["model"] = {"dtype": dtype}
    if lr is not None:
        overrides["optimizer"] = {"lr": lr}
    summary = run_scenario(scenario, out, overrides=overrides)
    wall = time.perf_counter() - t0
    final = cached_evaluation(root / f"seed{seed}.test.json", out, "--run", str(out))
    zero = cached_evaluation(root / f"seed{seed}.zero-shot.json", out, "--model", "smollm2-135m", "--task",
                       "rotten-tomatoes", "--prompt", PROMPT, "--seed", str(seed), "--dtype", dtype or "fp32")
    dev = [{"round": r.round, "accuracy": r.eval_accuracy, "n": r.eval_n,
            "interval": [r.eval_accuracy_low, r.eval_accuracy_high]}
           for r in RunDir.read(out).rounds() if r.eval_accuracy is not None]
    return {
        "seed": seed, "dev": dev,
        "test_zero_shot": {"accuracy": zero["accuracy"], "n": zero["n"],
                           "interval": list(wilson_interval(zero["accuracy"], zero["n"]))},
        "test_final": {"accuracy": final["accuracy"], "n": final["n"],
                       "interval": list(wilson_interval(final["accuracy"], final["n"]))},
        "test_gain": final["accuracy"] - zero["accuracy"],
        "sim_seconds": summary["sim_seconds"], "sim_time_basis": summary.get("sim_time_basis"),
        "host_seconds": summary["host_seconds"], "wall_seconds_this_call": round(wall, 1),
        "server_peak_rss_bytes": summary.get("server_peak_rss_bytes"),
        "bytes_up": summary["bytes_up"], "bytes_down": summary["bytes_down"],
        "bytes_by_kind": summary.get("bytes_by_kind", {}), "model_sha256": summary["model_sha256"],
        "matches_summary": final["matches_summary"],
    }


def format_table(result: dict[str, Any]) -> str:
    """The Markdown table of ``result``."""
    rows = [("| seed | dev accuracy by round (n 100) | test zero-shot | test after the run | gain | simulated s | "
            "host s | bytes up / down |"), "|---|---|---|---|---|---|---|---|"]
    for r in result["seeds"]:
        dev = " / ".join(f"{d['accuracy']:.2f}" for d in r["dev"])
        z, f = r["test_zero_shot"], r["test_final"]
        rows.append(f"| {r['seed']} | {dev} | {z['accuracy']:.3f} [{z['interval'][0]:.3f}, {z['interval'][1]:.3f}] | "
                    f"{f['accuracy']:.3f} [{f['interval'][0]:.3f}, {f['interval'][1]:.3f}] | {r['test_gain']:+.3f} | "
                    f"{r['sim_seconds']:.0f} | {r['host_seconds']:.0f} | {r['bytes_up']:,} / {r['bytes_down']:,} |")
    g = result["test_gain"]
    rows.append(f"\nTest gain over the best zero-shot prompt, mean ± sd over {len(result['seeds'])} seeds: "
                f"{g['mean']:+.3f} ± {g['sd']:.3f}.\n")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the seeds and write the results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/quickstart")
    p.add_argument("--scenario", default="scenarios/quickstart.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                   help="override model.dtype (give a separate --out: runs are reused by seed)")
    p.add_argument("--lr", type=float, default=None,
                   help="override optimizer.lr (give a separate --out: runs are reused by seed)")
    args = p.parse_args(argv)
    root = Path(args.out) / "runs"
    seeds = [one_seed(args.scenario, root, s, args.dtype, args.lr) for s in args.seeds]
    gains = [s["test_gain"] for s in seeds]
    result = {"command": " ".join(["python -m analysis.experiments.quickstart", *(sys.argv[1:] if argv is None else argv)]),
              "scenario": args.scenario, "dtype": args.dtype or "fp32", "lr": args.lr, "seeds": seeds,
              "test_gain": {"mean": statistics.mean(gains), "sd": statistics.stdev(gains) if len(gains) > 1 else 0.0}}
    write_results(Path(args.out), result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
