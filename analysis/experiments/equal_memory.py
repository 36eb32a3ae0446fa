"""Experiment 1: equal memory. On Raspberry Pi 5 2 GB boards, ZO on SmolLM2-135M against
the backprop configurations that fit the same budget, over several seeds.

Every contender puts eight ``rpi5-2gb`` boards (1.5 GB usable) on the same data and
evaluation split, and its simulated clock is the board's, so accuracy is compared per
simulated second on that device:

- ``zo-smollm2``: ZO prompt tuning of SmolLM2-135M (``scenarios/equal-memory-zo-smollm2.yaml``);
- ``bp-minilm``: FedAvg with full backprop on MiniLM-L6, the model whose plain backprop
  fits (``scenarios/equal-memory-bp-minilm.yaml``);
- ``bp-smollm2-ckpt``: FedAvg with backprop on SmolLM2-135M itself, LoRA r8 adapters and
  activation checkpointing, the cheapest backprop on that model
  (``scenarios/equal-memory-bp-smollm2-ckpt.yaml``);
- ``fg-smollm2``: the ZO contender with forward gradients (the exact directional
  derivative by forward-mode differentiation) instead of central differences
  (``scenarios/equal-memory-fg-smollm2.yaml``).

Each seed runs every contender (the seed also draws the task's split and the fleet's
sampling), then evaluates its final global model on the 1000-sentence test split. The
memory table gives each configuration's predicted peak and the peak of a fresh process on
this host that loads it and runs one local step on a batch as wide as the task allows
(``--seq``, the widest batch a client can draw), with the step's live tensors predicted and
measured beside it (the rest of the resident set is the C allocator's)::

    python -m analysis.experiments.equal_memory --out analysis/results/equal_memory

writes ``results.json``, ``table.md`` and ``accuracy_vs_time.png`` into OUT for the seeds
given (``--seeds``, default 0 1 2). Runs and evaluations are resumable and reused, so the
seeds can be spread over invocations: ``--seeds 0`` now, ``--seeds 0 1`` later reruns
nothing of seed 0. ``--one-seed NAME`` runs a costly contender on the first seed only
(checkpointed backprop on SmolLM2 takes about 6 host-hours a seed); its rows say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from analysis.experiments.common import cached_evaluation, run_scenario, spread, write_results
from fedzo.config.scenario import load_scenario
from fedzo.reporting.rundir import Run, load_run

ZO = "zo-smollm2"
CONTENDERS: dict[str, tuple[str, str]] = {  # name: (label, scenario)
    ZO: ("ZO, SmolLM2-135M (prompt tuning)", "scenarios/equal-memory-zo-smollm2.yaml"),
    "bp-minilm": ("backprop, MiniLM-L6 (full, FedAvg)", "scenarios/equal-memory-bp-minilm.yaml"),
    "bp-smollm2-ckpt": ("backprop, SmolLM2-135M (LoRA r8 + checkpointing, FedAvg)",
                        "scenarios/equal-memory-bp-smollm2-ckpt.yaml"),
    "fg-smollm2": ("forward gradients, SmolLM2-135M (prompt tuning)", "scenarios/equal-memory-fg-smollm2.yaml"),
}


class MemoryConfig(NamedTuple):
    """One row of the memory table: a configuration of one client's local step."""

    label: str
    model: str
    method: str  # "zo" or "bp"
    peft: str  # as fedzo names it: full, lora, prefix or prompt
    optimizer: str  # sgd or adam
    checkpointing: bool = False
    forward_grad: bool = False


MEMORY_CONFIGS: tuple[MemoryConfig, ...] = (
    MemoryConfig("ZO SmolLM2-135M, prompt tuning", "smollm2-135m", "zo", "prompt", "sgd"),
    MemoryConfig("ZO SmolLM2-135M, prompt tuning, forward gradients", "smollm2-135m", "zo", "prompt", "sgd",
                 forward_grad=True),
    MemoryConfig("ZO SmolLM2-135M, full", "smollm2-135m", "zo", "full", "sgd"),
    MemoryConfig("BP MiniLM-L6, full, Adam", "minilm-l6", "bp", "full", "adam"),
    MemoryConfig("BP SmolLM2-135M, LoRA r8, Adam, checkpointing", "smollm2-135m", "bp", "lora", "adam",
                 checkpointing=True),
    MemoryConfig("BP SmolLM2-135M, LoRA r8, Adam", "smollm2-135m", "bp", "lora", "adam"),
    MemoryConfig("BP SmolLM2-135M, full, Adam", "smollm2-135m", "bp", "full", "adam"),
)


def memory_row(c: MemoryConfig, out: Path, *, batch: int, seq: int, budget: int, task: str) -> dict[str, Any]:
    """One configuration's predicted peak (the memory model alone, its default runtime
    overhead) and the peak measured in a fresh process running one step of it on a
    ``batch`` x ``seq`` batch of the task's classifier (cached in ``out``)."""
    from fedzo.devices.validate import ValidationCase, measure, predict

    case = ValidationCase(c.model, c.method, batch, seq, peft=c.peft, optimizer=c.optimizer,  # type: ignore[arg-type]
                          checkpointing=c.checkpointing, task=task, forward_grad=c.forward_grad)
    breakdown = predict(case)
    slug = "-".join([c.method, c.model, c.peft, c.optimizer, *(["ckpt"] if c.checkpointing else []),
                     *(["fg"] if c.forward_grad else []), f"{batch}x{seq}"])
    cached = out / f"{slug}.json"
    if cached.exists():
        m = json.loads(cached.read_text(encoding="utf-8"))
    else:
        m = measure(case, timeout=1800)
        out.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
    return {"configuration": c.label, "model": c.model, "method": c.method, "peft": c.peft,
            "checkpointing": c.checkpointing, "predicted_bytes": breakdown.total,
            "measured_peak_rss_bytes": int(m["hwm"]), "fits_budget_predicted": breakdown.total <= budget,
            "fits_budget_measured": int(m["hwm"]) <= budget,
            "step_tensors_predicted_bytes": breakdown.largest_phase, "step_tensors_measured_bytes": m.get("tensors")}


def memory_table(out: Path, *, batch: int, seq: int, budget: int, task: str) -> list[dict[str, Any]]:
    """Predicted and measured peak memory of each configuration, and whether it fits."""
    rows = []
    for c in MEMORY_CONFIGS:
        row = memory_row(c, out / "memory", batch=batch, seq=seq, budget=budget, task=task)
        rows.append(row)
        print(f"{c.label}: predicted {row['predicted_bytes'] / 1e9:.2f} GB, "
              f"measured {row['measured_peak_rss_bytes'] / 1e9:.2f} GB", flush=True)
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
    changes = [(t, who) for (t, who, _, _), (_, prev, _, _) in zip(lead[1:], lead[:-1], strict=True) if who != prev]
    return {"leader_at_start": lead[0][1] if lead else None, "leader_at_end": lead[-1][1] if lead else None,
            "lead_changes": [{"sim_seconds": t, "new_leader": who} for t, who in changes],
            "timeline": [{"sim_seconds": t, "leader": who, "zo_accuracy": a, "bp_accuracy": b}
                         for t, who, a, b in lead]}


def one_run(name: str, scenario: Path, root: Path, seed: int) -> dict[str, Any]:
    """Run one contender with ``seed``, evaluate its final model on the test split."""
    from fedzo.stats import wilson_interval

    out = root / f"seed{seed}" / name
    s = run_scenario(scenario, out, overrides={"seed": seed})
    test = cached_evaluation(root / f"seed{seed}" / f"{name}.test.json", out, "--run", str(out))
    return {"seed": seed, "test_accuracy": test["accuracy"], "test_n": test["n"],
            "test_interval": list(wilson_interval(test["accuracy"], test["n"])),
            **{k: s.get(k) for k in ("initial_accuracy", "final_accuracy", "best_accuracy", "sim_seconds",
                                     "host_seconds", "bytes_up", "bytes_down")}}


def _reprice(loaded: dict[tuple[str, int], Run], runs: dict[str, list[dict[str, Any]]],
             path: Path) -> dict[str, Any]:
    """Every run's round times and total under the calibration at ``path`` (in place)."""
    from dataclasses import replace

    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.reprice import reprice

    cal = load_calibration(path)
    for (name, seed), run in loaded.items():
        table = reprice(run.path, cal)
        at = {r["round"]: r for r in table["rounds"]}
        rounds = [r.model_copy(update={"sim_seconds": at[r.round]["new_sim_seconds"],
                                       "round_sim_seconds": at[r.round]["new_round_sim_seconds"]})
                  if r.round in at else r for r in run.rounds]
        loaded[name, seed] = replace(run, rounds=rounds, summary={**run.summary, "sim_seconds": table["new_sim_seconds"]})
        row = next(r for r in runs[name] if r["seed"] == seed)
        row["sim_seconds_as_run"], row["sim_seconds"] = row["sim_seconds"], table["new_sim_seconds"]
    return {"calibration": str(path), "sha256": cal.digest()}


def summarize(runs: dict[str, list[dict[str, Any]]], comparisons: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per contender: test and dev accuracy over the seeds; per BP contender: where ZO loses the lead."""
    per = {name: {"label": CONTENDERS[name][0] if name in CONTENDERS else name, "seeds": [r["seed"] for r in rs],
                  "test_accuracy": spread([r["test_accuracy"] for r in rs]),
                  "final_dev_accuracy": spread([r["final_accuracy"] for r in rs]),
                  "sim_seconds": spread([r["sim_seconds"] for r in rs]),
                  "host_seconds": spread([r["host_seconds"] for r in rs])}
           for name, rs in runs.items()}
    crossover = {}
    for bp, cs in comparisons.items():
        firsts = [next((x["sim_seconds"] for x in c["lead_changes"] if x["new_leader"] == "bp"), None) for c in cs]
        crossover[bp] = {"seeds": [c["seed"] for c in cs], "bp_takes_the_lead_at_sim_seconds": firsts,
                         "leader_at_end": [c["leader_at_end"] for c in cs]}
    return {"contenders": per, "zo_vs_bp": crossover}


def figure(runs: dict[str, Run], labels: dict[str, str], path: Path, budget: int) -> None:
    """Accuracy vs simulated wall-clock of every run (fedzo's standard figure)."""
    from fedzo.reporting.plots import PNG_DPI, accuracy_vs_time

    fig = accuracy_vs_time(list(runs.values()), [labels[k] for k in runs], print)
    if fig is None:
        raise RuntimeError("no evaluated rounds to plot")
    fig.axes[0].set_title(f"Equal memory: {budget / 1e9:.1f} GB boards (Raspberry Pi 5 2 GB), simulated clock")
    fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")


def _pm(s: dict[str, float], fmt: str = ".3f", scale: float = 1.0) -> str:
    return f"{s['mean'] / scale:{fmt}} ± {s['sd'] / scale:{fmt}}"


def format_table(result: dict[str, Any]) -> str:
    """Markdown: the memory table, the contenders over the seeds and the ZO/BP crossovers."""
    budget = result["budget_bytes"]
    lines = [f"Budget: {budget / 1e9:.2f} GB (rpi5-2gb). Memory for batch {result['batch']} x {result['seq']} tokens.",
             "", ("| configuration | model prediction | measured peak RSS (host) | fits? (pred. / meas.) "
                  "| step's live tensors (pred. / meas.) |"), "|---|---|---|---|---|"]
    for r in result["memory"]:
        fits = f"{'yes' if r['fits_budget_predicted'] else 'no'} / {'yes' if r['fits_budget_measured'] else 'no'}"
        measured = r.get("step_tensors_measured_bytes")
        tensors = (f"{r['step_tensors_predicted_bytes'] / 1e6:.0f} / "
                   f"{'n/a' if measured is None else f'{measured / 1e6:.0f}'} MB") if "step_tensors_predicted_bytes" in r else "n/a"
        lines.append(f"| {r['configuration']} | {r['predicted_bytes'] / 1e9:.2f} GB | "
                     f"{r['measured_peak_rss_bytes'] / 1e9:.2f} GB | {fits} | {tensors} |")
    if result.get("repriced_with"):
        lines += ["", (f"Simulated times are repriced under `{result['repriced_with']['calibration']}` (sha256 "
                       f"{result['repriced_with']['sha256'][:12]}, `fedzo calibrate --reprice`); each run keeps "
                       "the times its own calibration gave (`sim_seconds_as_run` in results.json).")]
    lines += ["", ("Mean ± sd over each contender's seeds (test: 1000 sentences, each run's 95 % interval "
                   "about ±2.6 points; one seed: sd 0, an anecdote):"), "",
              "| contender | seeds | test accuracy | final dev accuracy (n 200) | simulated time | host time |",
              "|---|---|---|---|---|---|"]
    for s in result["summary"]["contenders"].values():
        lines.append(f"| {s['label']} | {', '.join(map(str, s['seeds']))} | {_pm(s['test_accuracy'])} | "
                     f"{_pm(s['final_dev_accuracy'])} | "
                     f"{_pm(s['sim_seconds'], '.1f', 60)} min | {_pm(s['host_seconds'], '.1f', 60)} min |")
    lines += ["", "| ZO vs | seeds | backprop takes the lead at (simulated s, per seed) | leader at the end (per seed) |",
              "|---|---|---|---|"]
    for bp, c in result["summary"]["zo_vs_bp"].items():
        at = ", ".join("never" if t is None else f"{t:.0f}" for t in c["bp_takes_the_lead_at_sim_seconds"])
        lines.append(f"| {bp} | {', '.join(map(str, c['seeds']))} | {at} | "
                     f"{', '.join(str(x) for x in c['leader_at_end'])} |")
    if result.get("horizon"):
        lines += format_horizon(result["horizon"])
    return "\n".join(lines) + "\n"


HORIZON_KEYS = ("command", "seeds", "finished", "short_of_horizon", "horizon", "crossovers", "plateau_test_accuracy")


def horizon_summary(horizon_dir: Path) -> dict[str, Any] | None:
    """The answer at the common horizon (:mod:`analysis.experiments.horizon`), as this
    experiment's results carry it: horizon, crossovers and plateau test accuracy (the mean
    curves stay in the horizon's own results.json); None before ``--answer`` ran."""
    path = horizon_dir / "results.json"
    if not path.exists():
        return None
    h = json.loads(path.read_text(encoding="utf-8"))
    out = {k: h[k] for k in HORIZON_KEYS if k in h}
    out["horizon"] = {k: v for k, v in h["horizon"].items() if k != "trace"}
    # the answer is whole once the horizon is fixed, every run of three seeds a contender reached
    # past it (a run need not go on to the cap) and the test accuracy at it was measured
    out["complete"] = (h["horizon"].get("minutes") is not None and not h.get("short_of_horizon")
                       and all(len(v) >= 3 for v in h["seeds"].values())
                       and set(h.get("plateau_test_accuracy") or {}) == set(h["seeds"]))
    return out


def attach_horizon(out: Path) -> None:
    """Rewrite OUT/results.json and OUT/table.md with the horizon's answer (OUT/horizon),
    leaving every other figure of experiment 1 as it was."""
    path = out / "results.json"
    result = json.loads(path.read_text(encoding="utf-8"))
    result["horizon"] = horizon_summary(out / "horizon")
    write_results(out, result, format_table)


def format_horizon(h: dict[str, Any]) -> list[str]:
    """The table's lines for the answer at the common horizon."""
    from analysis.experiments.horizon_answer import format_answer

    short = h.get("short_of_horizon") or {}
    seeds = "; ".join(f"{n}: seeds {', '.join(map(str, s)) or 'none'}"
                      f"{' (a run short of the horizon)' if any(r.endswith('/' + n) for r in short) else ''}"
                      for n, s in h["seeds"].items())
    lines = ["", "### At the common horizon", "",
             (f"{'All' if h['complete'] else 'Partial, not yet the answer:'} runs to the horizon so far ({seeds}); "
              f"dev accuracy on the whole 500-sentence split. `{h['command']}`, "
              "[horizon/table.md](horizon/table.md), [horizon/dev_vs_time.png](horizon/dev_vs_time.png)."), ""]
    lines += format_answer(h).rstrip("\n").split("\n")
    plateau = h.get("plateau_test_accuracy") or {}
    if plateau:
        lines += ["", "| contender | plateau test accuracy at the horizon (1000 sentences) | seeds |", "|---|---|---|"]
        for name, p in plateau.items():
            lines.append(f"| {name} | {_pm(p)} | {', '.join(str(t['seed']) for t in p['per_seed'])} |")
    return lines


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="analysis/results/equal_memory")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS), help=f"of {', '.join(CONTENDERS)}")
    p.add_argument("--scenario", nargs="+", default=[], metavar="NAME=PATH",
                   help="replace a contender's scenario (tests use tiny models)")
    p.add_argument("--seq", type=int, default=128,
                   help="batch width of the memory table: the task's max_length (Rotten Tomatoes: 128), "
                        "the widest batch a client can draw")
    p.add_argument("--skip-memory", action="store_true", help="leave out the measured memory table")
    p.add_argument("--reprice", metavar="CALIBRATION",
                   help="report simulated times under this calibration instead of the one each run was priced "
                        "with (fedzo calibrate --reprice: exact for these runs, whose clock decides nothing)")
    p.add_argument("--one-seed", nargs="+", default=[], metavar="NAME",
                   help="contenders run on the first of --seeds only (costly ones; their rows list their seeds)")
    a = p.parse_args(argv)
    replaced = dict(x.split("=", 1) for x in a.scenario)
    if ZO not in a.contenders or set(a.contenders) - set(CONTENDERS) or set(replaced) - set(CONTENDERS):
        p.error(f"--contenders/--scenario: names are {', '.join(CONTENDERS)}, and {ZO} is always one")
    if set(a.one_seed) - set(a.contenders) or ZO in a.one_seed:
        p.error(f"--one-seed {' '.join(a.one_seed)}: names are the contenders run ({', '.join(a.contenders)}) "
                f"other than {ZO}, which every comparison needs on every seed")
    a.seeds_of = {n: a.seeds[:1] if n in a.one_seed else a.seeds for n in a.contenders}
    a.scenarios = {n: Path(replaced.get(n, CONTENDERS[n][1])) for n in a.contenders}
    return a


def main(argv: list[str] | None = None) -> int:
    """Measure memory, run every contender for every seed, compare and plot."""
    a = _arguments(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    zo = load_scenario(a.scenarios[ZO])
    from fedzo.devices.profiles import get_profile

    assert zo.fleet is not None and zo.fleet.devices, f"{a.scenarios[ZO]}: needs a fleet of devices"
    budget = int(get_profile(zo.fleet.devices[0].profile).memory_budget)
    t0 = time.perf_counter()
    memory = [] if a.skip_memory else memory_table(out, batch=zo.data.batch_size, seq=a.seq, budget=budget,
                                                   task=zo.data.task)
    root = out / "runs"
    runs = {n: [one_run(n, path, root, seed) for seed in a.seeds_of[n]] for n, path in a.scenarios.items()}
    loaded = {(n, seed): load_run(root / f"seed{seed}" / n) for n in a.scenarios for seed in a.seeds_of[n]}
    repriced = None
    if a.reprice:
        repriced = _reprice(loaded, runs, Path(a.reprice))
    comparisons = {n: [{"seed": seed, **compare(curve(loaded[ZO, seed]), curve(loaded[n, seed]))}
                       for seed in a.seeds_of[n]]
                   for n in a.scenarios if n.startswith("bp-")}
    labels = {f"{n}/{seed}": f"{CONTENDERS[n][0]}, seed {seed}" for n, seed in loaded}
    figure({f"{n}/{seed}": r for (n, seed), r in loaded.items()}, labels, out / "accuracy_vs_time.png", budget)
    result = {"command": " ".join(["python -m analysis.experiments.equal_memory", *(sys.argv[1:] if argv is None else argv)]),
              "budget_bytes": budget, "batch": zo.data.batch_size, "seq": a.seq, "seeds": a.seeds,
              "memory": memory, "runs": runs, "comparisons": comparisons, "repriced_with": repriced,
              "summary": summarize(runs, comparisons), "seconds_this_invocation": time.perf_counter() - t0,
              "horizon": horizon_summary(out / "horizon")}
    write_results(out, result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
