"""Experiment 1: equal memory. Under a Raspberry Pi 5 2 GB budget, ZO on SmolLM2-135M vs backprop on MiniLM-L6.

Both scenarios put eight ``rpi5-2gb`` boards (1.5 GB usable) on the same data and
evaluation split; their simulated clock is the board's, so accuracy is compared per
simulated second on that device. The memory table gives, for the two runs' settings and
for backprop on SmolLM2 (which the fleet refuses), the memory model's prediction and
the peak RSS measured in a fresh process on this host::

    python -m analysis.experiments.equal_memory --out analysis/results/equal_memory

writes ``results.json``, ``table.md`` and ``accuracy_vs_time.png`` into OUT. Runs are
resumable: finished runs are reused, cut ones resumed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from analysis.experiments.common import measured_peak, run_scenario, write_results
from fedzo.config.scenario import load_scenario
from fedzo.reporting.rundir import Run, load_run

SCENARIOS = {"zo-smollm2": "scenarios/equal-memory-zo-smollm2.yaml",
             "bp-minilm": "scenarios/equal-memory-bp-minilm.yaml"}

# (label, model, method, peft, BP optimizer, fedzo train flags that reproduce one local step)
MEMORY_CONFIGS: tuple[tuple[str, str, str, str, str, list[str]], ...] = (
    ("ZO SmolLM2-135M, prompt tuning", "smollm2-135m", "zo", "prefix", "sgd",
     ["--optimizer", "zo-sgd", "--peft", "prompt", "--lr", "1e-3", "--eps", "1e-2"]),
    ("ZO SmolLM2-135M, full", "smollm2-135m", "zo", "full", "sgd",
     ["--optimizer", "zo-sgd", "--peft", "full", "--lr", "1e-6"]),
    ("BP MiniLM-L6, full, Adam", "minilm-l6", "bp", "full", "adam",
     ["--optimizer", "fo-adam", "--peft", "full", "--lr", "5e-5"]),
    ("BP SmolLM2-135M, LoRA r8, Adam", "smollm2-135m", "bp", "lora", "adam",
     ["--optimizer", "fo-adam", "--peft", "lora", "--lr", "5e-4"]),
    ("BP SmolLM2-135M, full, Adam", "smollm2-135m", "bp", "full", "adam",
     ["--optimizer", "fo-adam", "--peft", "full", "--lr", "1e-5"]),
)


def memory_table(out: Path, *, batch: int, seq: int, budget: int, task: str) -> list[dict[str, Any]]:
    """Predicted and measured peak memory of each configuration, and whether it fits."""
    from fedzo.devices.architectures import model_config
    from fedzo.devices.memory import estimate_memory

    rows = []
    for label, model, method, peft, opt, flags in MEMORY_CONFIGS:
        predicted = int(estimate_memory(model_config(model), method, batch=batch, seq=seq,  # type: ignore[arg-type]
                                        peft=peft, optimizer=opt).total)
        slug = label.split(",")[0].replace(" ", "-").lower() + "-" + peft
        measured = measured_peak(out / "memory" / slug, ["--model", model, "--task", task, "--steps", "3",
                                                          "--batch-size", str(batch), "--eval-examples", "8",
                                                          "--threads", "1", "--name", slug, *flags])
        rows.append({"configuration": label, "model": model, "method": method, "peft": peft,
                     "predicted_bytes": predicted, "measured_peak_rss_bytes": measured,
                     "fits_budget_predicted": predicted <= budget, "fits_budget_measured": measured <= budget})
        print(f"{label}: predicted {predicted / 1e9:.2f} GB, measured {measured / 1e9:.2f} GB", flush=True)
    return rows


def curve(run: Run) -> list[tuple[float, float]]:
    """(simulated seconds, eval accuracy) of every evaluated round."""
    return [(r.sim_seconds or 0.0, r.eval_accuracy) for r in run.eval_rounds  # type: ignore[misc]
            if r.eval_accuracy is not None]


def accuracy_at(points: list[tuple[float, float]], t: float) -> float | None:
    """The latest accuracy known at simulated time ``t`` (a step function)."""
    known = [a for s, a in points if s <= t]
    return known[-1] if known else None


def compare(zo: list[tuple[float, float]], bp: list[tuple[float, float]]) -> dict[str, Any]:
    """Who leads at each evaluation time both runs cover, and when the lead changes hands."""
    # only while both runs have data: past its last evaluation a run is not extrapolated
    end = min(zo[-1][0], bp[-1][0]) if zo and bp else 0.0
    times = sorted(t for t in {s for s, _ in zo} | {s for s, _ in bp} if t <= end)
    lead = []
    for t in times:
        a, b = accuracy_at(zo, t), accuracy_at(bp, t)
        if a is not None and b is not None:
            lead.append((t, "zo" if a > b else "bp" if b > a else "tie", a, b))
    changes = [(t, who) for (t, who, _, _), (_, prev, _, _) in zip(lead[1:], lead[:-1]) if who != prev]
    return {"leader_at_start": lead[0][1] if lead else None, "leader_at_end": lead[-1][1] if lead else None,
            "lead_changes": [{"sim_seconds": t, "new_leader": who} for t, who in changes],
            "timeline": [{"sim_seconds": t, "leader": who, "zo_accuracy": a, "bp_accuracy": b}
                         for t, who, a, b in lead]}


def figure(runs: dict[str, Run], labels: dict[str, str], path: Path, budget: int) -> None:
    """Accuracy vs simulated wall-clock of both runs (fedzo's standard figure)."""
    from fedzo.reporting.plots import PNG_DPI, accuracy_vs_time

    fig = accuracy_vs_time(list(runs.values()), [labels[k] for k in runs], print)
    if fig is None:
        raise RuntimeError("no evaluated rounds to plot")
    fig.axes[0].set_title(f"Equal memory: {budget / 1e9:.1f} GB boards (Raspberry Pi 5 2 GB), simulated clock")
    fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")


def format_table(result: dict[str, Any]) -> str:
    """Markdown: the memory table and the two runs."""
    budget = result["budget_bytes"]
    lines = [f"Budget: {budget / 1e9:.2f} GB (rpi5-2gb). Memory for batch {result['batch']} x {result['seq']} tokens.",
             "", "| configuration | model prediction | measured peak RSS (host) | fits? (pred. / meas.) |",
             "|---|---|---|---|"]
    for r in result["memory"]:
        fits = f"{'yes' if r['fits_budget_predicted'] else 'no'} / {'yes' if r['fits_budget_measured'] else 'no'}"
        lines.append(f"| {r['configuration']} | {r['predicted_bytes'] / 1e9:.2f} GB | "
                     f"{r['measured_peak_rss_bytes'] / 1e9:.2f} GB | {fits} |")
    lines += ["", "| run | initial acc. | final acc. | best acc. | simulated time | host time | bytes up+down |",
              "|---|---|---|---|---|---|---|"]
    for name, s in result["runs"].items():
        lines.append(f"| {name} | {s['initial_accuracy']:.3f} | {s['final_accuracy']:.3f} | {s['best_accuracy']:.3f} | "
                     f"{s['sim_seconds'] / 60:.1f} min | {s['host_seconds'] / 60:.1f} min | "
                     f"{(s['bytes_up'] + s['bytes_down']) / 1e6:,.3f} MB |")
    c = result["comparison"]
    changes = ", ".join(f"{x['new_leader']} at {x['sim_seconds']:.0f} s" for x in c["lead_changes"]) or "none"
    lines += ["", f"Leader at the first common evaluation: {c['leader_at_start']}; at the end: {c['leader_at_end']}; "
              f"lead changes: {changes}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Measure memory, run both scenarios, compare and plot."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/equal_memory")
    p.add_argument("--zo-scenario", default=SCENARIOS["zo-smollm2"])
    p.add_argument("--bp-scenario", default=SCENARIOS["bp-minilm"])
    p.add_argument("--seq", type=int, default=64, help="tokens per example for the memory prediction")
    p.add_argument("--threads", type=int, default=None, help="torch threads of every run (default: the scenarios')")
    p.add_argument("--skip-memory", action="store_true", help="leave out the measured memory table")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    scen = {"zo-smollm2": Path(a.zo_scenario), "bp-minilm": Path(a.bp_scenario)}
    zo = load_scenario(scen["zo-smollm2"])
    batch = zo.data.batch_size
    from fedzo.devices.profiles import get_profile

    assert zo.fleet is not None and zo.fleet.devices, f"{scen['zo-smollm2']}: needs a fleet of devices"
    budget = int(get_profile(zo.fleet.devices[0].profile).memory_budget)
    t0 = time.perf_counter()
    memory = [] if a.skip_memory else memory_table(out, batch=batch, seq=a.seq, budget=budget, task=zo.data.task)
    over = {"runtime": {"threads": a.threads}} if a.threads else None
    summaries = {name: run_scenario(scen[name], out / "runs" / name, overrides=over) for name in scen}
    runs = {name: load_run(out / "runs" / name) for name in scen}
    comparison = compare(curve(runs["zo-smollm2"]), curve(runs["bp-minilm"]))
    labels = {"zo-smollm2": "ZO, SmolLM2-135M (prompt tuning)", "bp-minilm": "backprop, MiniLM-L6 (full, FedAvg)"}
    figure(runs, labels, out / "accuracy_vs_time.png", budget)
    result = {"budget_bytes": budget, "batch": batch, "seq": a.seq, "memory": memory,
              "runs": {n: {k: s.get(k) for k in ("initial_accuracy", "final_accuracy", "best_accuracy", "sim_seconds",
                                                  "host_seconds", "bytes_up", "bytes_down", "peak_client_memory_bytes")}
                       for n, s in summaries.items()},
              "comparison": comparison, "seconds_this_invocation": time.perf_counter() - t0}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
