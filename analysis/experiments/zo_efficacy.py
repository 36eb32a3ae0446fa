"""ZO methods at a fixed forward-pass budget: which one gains most, federated (issue 17).

Every cell is one federated run of the same fleet (``--clients`` clients, all taking part
in every round, K local steps each) on the model and task given, tuning ``prompt`` or
``lora`` parameters with one method of :data:`METHODS`. A cell gets the same number of
forward passes over the whole fleet whatever its method: ``rounds = budget / (clients x K
x forward passes per step)``; a step costs 2q forwards (central differences), q + 1
(``fzoo``) or 3 (a tangent forward, charged as three: the forward and its tangent's
matmuls). Each run evaluates on ``--search-eval`` dev examples at a few points (accuracy
against fleet forward passes and against simulated device time); its final global model is then scored once on the test split (``fedzo evaluate --run``,
1000 sentences; ``--eval-examples`` limits it). The runs price device time with FLOP
estimates; the report reprices each cell exactly under ``--calibration`` (default the
shipped ``reference-host``; ``fedzo calibrate --reprice``, cached in ``CELL.clock.json``)
and keeps the run's own figure as ``sim_seconds_as_run``.

Two phases, each resumable (a cell whose ``summary.json`` exists is reused, a cut one is
resumed, a test score is cached beside its run)::

    python -m analysis.experiments.zo_efficacy --phase search   # every method x tuning x lr, seed 0
    python -m analysis.experiments.zo_efficacy --phase seeds    # ZO-SGD and the two best, 3 seeds,
                                                                # federated and centralized
    python -m analysis.experiments.zo_efficacy --phase report   # tables and figure of the finished
                                                                # cells, running none (mid-search)

Besides the table, each phase draws ``accuracy_vs_forwards.png`` (dev accuracy against
fleet forward passes and simulated device time) and estimates, per cell, the forward
passes the target (0.85) would take on the cell's log-linear trend, with its range
(:mod:`analysis.experiments.zo_efficacy_report`; labelled an estimate).

The search ranks each (method, tuning) by its best learning rate's final dev accuracy
(never by test: the test split only reports). The seeds phase takes the tuning of the
best search cell and reruns ZO-SGD and the two best other methods there at their rate on
``--seeds``, federated (seed 0 is the search cell itself) and as one centralized
``fedzo train`` run with the same forward passes. ``results.json`` carries
``best_method`` and ``best_federated_test_accuracy`` (mean test accuracy over seeds of
the best method) once the seeds phase has run. Cells run in the order most informative
when a session ends mid-search: every method at its first rate, then at its second.
Defaults are SmolLM2-135M on Rotten Tomatoes on the batched engine (the same runs to
float32 rounding of the losses; on 2 cores 1.12x as fast as in-process for a prompt cell's
fleet and 1.00x for a LoRA cell's, ``analysis/results/batched``; ``--engine inprocess``
for the reference);
``--model tiny-llama --task synthetic-sentiment-large`` runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis.experiments.common import cached_evaluation, run_fedzo, write_results
from analysis.experiments.zo_efficacy_report import (
    TARGET,
    cell_extrapolation,
    extrapolation_cell,
    figure,
    seeds_table,
    summarize_seeds,
)
from fedzo.archives import locate
from fedzo.stats import wilson_interval


@dataclass(frozen=True)
class Method:
    """A ZO method as scenario keys, its forward passes per step and the learning rates searched."""

    label: str
    zo: dict[str, Any]
    forwards: int
    lrs: dict[str, tuple[float, ...]]  # by tuning kind
    server: dict[str, Any] = field(default_factory=dict)  # federation.server_optimizer (federated only)


# Two rates per method for prompt tuning (the tuning that moves at this budget: the quickstart's 1e-3 and ten
# times it), one for LoRA (ZO-SGD two): at about 1.3 s a forward pass on 2 cores, the 16 search cells take about
# 4.5 CPU-hours, the seeds phase as much again.
LRS: dict[str, tuple[float, ...]] = {"prompt": (1e-3, 1e-2), "lora": (1e-4, 1e-3)}
ONE: dict[str, tuple[float, ...]] = {"prompt": (1e-3, 1e-2), "lora": (1e-3,)}
METHODS: dict[str, Method] = {
    "zo-sgd": Method("ZO-SGD (central, q = 1)", {"estimator": "central", "q": 1}, 2, LRS),
    "fzoo": Method("FZOO-style (q = 4 Rademacher, normalized)",
                   {"estimator": "fzoo", "q": 4, "distribution": "rademacher"}, 5, {
                       "prompt": (1e-2, 1e-1), "lora": (1e-2,)}),
    "sparse": Method("Sparse MeZO-style (magnitude mask, 10 %)", {"mask": "magnitude", "mask_density": 0.1}, 2, ONE),
    "forward-grad": Method("forward gradient (jvp)", {"estimator": "forward-grad"}, 3, ONE),
    "server-adam": Method("ZO-SGD + server Adam (FedAdam)", {"estimator": "central", "q": 1}, 2, ONE,
                          server={"name": "adam"}),
}
TUNINGS = ("prompt", "lora")


def cell_rounds(a: argparse.Namespace, method: Method) -> int:
    """Rounds that spend the budget of fleet forward passes (at least 1)."""
    return max(1, a.budget // (a.clients * a.local_steps * method.forwards))


CLIENT_LR = {"prompt": 1e-3, "lora": 1e-4}  # the clients' rate under a server optimizer (ZO-SGD's first)


def scenario(a: argparse.Namespace, name: str, peft: str, lr: float, seed: int) -> dict[str, Any]:
    """The federated scenario of one cell (version-2 keys)."""
    m = METHODS[name]
    rounds = cell_rounds(a, m)
    fed: dict[str, Any] = {"num_clients": a.clients, "clients_per_round": a.clients, "rounds": rounds,
                           "local_steps": a.local_steps, "eval_every": max(1, rounds // a.points),
                           "catch_up": "replay", "round_timeout": 3600, "engine": a.engine}
    if m.server:  # server Adam moves each coordinate by about its own lr per round: that lr is searched
        fed["server_optimizer"] = {**m.server, "lr": lr}
    return {"version": 2, "name": f"efficacy-{name}-{peft}", "seed": seed,
            "model": {"name": a.model, "peft": peft},
            "data": {"task": a.task, "batch_size": a.batch_size, "eval_split": "dev", "eval_examples": a.search_eval,
                     "eval_batch_size": 16,  # cache-sized on a CPU: about 1.3x faster than 32
                     **({"train_examples": a.train_examples} if a.train_examples else {})},
            "zo": {"eps": a.eps, **m.zo}, "optimizer": {"name": "zo-sgd", "lr": CLIENT_LR[peft] if m.server else lr},
            "runtime": {"device": "cpu", "threads": a.threads}, "federation": fed}


def run_cell(a: argparse.Namespace, path: Path, sc: dict[str, Any], *, centralized: bool = False) -> dict[str, Any]:
    """Run (or reuse, or resume) one cell, then score its final model on the test split."""
    path = locate(path)  # a finished cell may sit in runs.zip
    if not (path / "summary.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if centralized:  # the same forward passes in one process, scored on test at the end (a centralized
            fed = sc.pop("federation")  # run has no global log for `fedzo evaluate --run`; nothing selects on it)
            sc["steps"] = sc["eval_every"] = fed["rounds"] * fed["num_clients"] * fed["local_steps"]
            sc["data"] = {**sc["data"], "eval_split": "test", "eval_examples": a.eval_examples}
        config = path.parent / f"{path.name}.yaml"
        config.write_text(yaml.safe_dump(sc, sort_keys=False), encoding="utf-8")
        resume = (path / "metrics.jsonl").exists()
        where = ["--resume", str(path)] if resume else [str(config), "--out", str(path)]
        run_fedzo(path, "train" if centralized else "run", *where, "--no-progress",
                  *([] if centralized else ["--no-plots"]))
    summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    if centralized:
        test = {"accuracy": summary["final_accuracy"], "n": summary["eval_n"]}
    else:
        limit = ["--limit", str(a.eval_examples)] if a.eval_examples else []
        test = cached_evaluation(path.parent / f"{path.name}.test.json", path, "--run", str(path), *limit)
    curve = [json.loads(x) for x in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    points = [{"round": r.get("round", r.get("step")), "accuracy": r["eval_accuracy"], "n": r.get("eval_n"),
               "interval": [r.get("eval_accuracy_low"), r.get("eval_accuracy_high")],
               "sim_seconds": r.get("sim_seconds"), "host_seconds": r.get("host_seconds")}
              for r in curve if r.get("kind") in ("round", "eval", None) and r.get("eval_accuracy") is not None]
    clock = None if centralized else device_clock(a, path)
    if clock is not None:  # the dev points at their calibrated device time; the run's own clock kept beside
        at = {r["round"]: r["new_sim_seconds"] for r in clock["rounds"]}
        for p in points:
            p["sim_seconds_as_run"], p["sim_seconds"] = p["sim_seconds"], at.get(p["round"], p["sim_seconds"])
        summary = {**summary, "sim_seconds_as_run": summary.get("sim_seconds"), "sim_seconds": clock["new_sim_seconds"]}
    dev = {} if centralized else {"dev_accuracy": summary["final_accuracy"], "initial_dev_accuracy":
                                  summary["initial_accuracy"], "dev_interval": summary.get("final_accuracy_interval"),
                                  "dev_n": summary.get("eval_n")}
    own_clock = curve[0].get("clock") if curve else None
    return {**dev, "clock": f"calibrated ({a.calibration}, repriced)" if clock else own_clock,
            "sim_seconds_as_run": summary.get("sim_seconds_as_run"),
            "test_accuracy": test["accuracy"], "test_n": test["n"], "test_interval": list(wilson_interval(test["accuracy"], test["n"])),
            "sim_seconds": summary.get("sim_seconds"), "host_seconds": summary.get("host_seconds"), "curve": points}


def device_clock(a: argparse.Namespace, path: Path) -> dict[str, Any] | None:
    """The cell's simulated clock repriced under ``--calibration`` (``fedzo calibrate
    --reprice``; None for ``none``), cached beside the run for that calibration's digest."""
    if a.calibration == "none":
        return None
    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.reprice import reprice
    from fedzo.calibration.resolve import calibration_path

    cal = load_calibration(calibration_path(a.calibration))
    cache = path.parent / f"{path.name}.clock.json"
    if cache.exists():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("new_calibration_sha256") == cal.digest():
            return dict(cached)
    clock = reprice(path, cal)
    cache.write_text(json.dumps(clock, indent=2) + "\n", encoding="utf-8")
    return clock


def grid() -> list[tuple[str, str, float]]:
    """(method, tuning, lr) of every search cell, in run order: tuning, then rate rank, then method."""
    width = max(len(m.lrs[p]) for m in METHODS.values() for p in TUNINGS)
    return [(name, peft, m.lrs[peft][k]) for peft in TUNINGS for k in range(width)
            for name, m in METHODS.items() if k < len(m.lrs[peft])]


def finished(path: Path) -> bool:
    """Whether the cell in ``path`` ran to its end and has its test score."""
    path = locate(path)
    return (path / "summary.json").exists() and (path.parent / f"{path.name}.test.json").exists()


def search(a: argparse.Namespace, *, only_finished: bool = False) -> list[dict[str, Any]]:
    """Every search cell on seed 0 (``only_finished``: the finished ones, running none)."""
    rows = []
    for name, peft, lr in grid():
        m = METHODS[name]
        path = Path(a.out) / "runs" / "search" / f"{name}-{peft}-{lr:g}"
        if only_finished and not finished(path):
            continue
        r = run_cell(a, path, scenario(a, name, peft, lr, 0))
        rows.append({"method": name, "peft": peft, "lr": lr, "rounds": cell_rounds(a, m),
                     "forwards": cell_rounds(a, m) * a.clients * a.local_steps * m.forwards, **r})
    return rows


def best_per_method(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """By tuning, each method's best search row (highest final dev accuracy, then the smaller lr)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        cur = out.setdefault(r["peft"], {}).get(r["method"])
        if cur is None or (r["dev_accuracy"], -r["lr"]) > (cur["dev_accuracy"], -cur["lr"]):
            out[r["peft"]][r["method"]] = r
    return out


def chosen(rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The tuning of the best search cell (by dev), and ZO-SGD with the two best other methods there."""
    best = best_per_method(rows)
    peft = max(best, key=lambda p: max(r["dev_accuracy"] for r in best[p].values()))
    others = sorted((n for n in best[peft] if n != "zo-sgd"), key=lambda n: -best[peft][n]["dev_accuracy"])
    return peft, ["zo-sgd", *others[:2]]


def seed_cells(a: argparse.Namespace, rows: list[dict[str, Any]]) -> list[tuple[str, str, float, int, bool, Path]]:
    """(method, tuning, lr, seed, centralized, run path) of every seeds-phase run, in run order:
    the federated runs seed by seed (so a partial phase compares the methods on equal seeds),
    then the centralized ones (a server optimizer has no centralized counterpart)."""
    peft, names = chosen(rows)
    best = best_per_method(rows)
    runs = Path(a.out) / "runs"
    cells = []
    for centralized in (False, True):
        for seed in a.seeds:
            for name in names:
                lr = best[peft][name]["lr"]
                if centralized and METHODS[name].server:
                    continue
                path = (runs / "seeds" / f"{name}-{peft}-s{seed}-central" if centralized
                        else runs / "search" / f"{name}-{peft}-{lr:g}" if seed == 0
                        else runs / "seeds" / f"{name}-{peft}-s{seed}")
                cells.append((name, peft, lr, seed, centralized, path))
    return cells


def seeds_phase(a: argparse.Namespace, rows: list[dict[str, Any]], *,
                only_finished: bool = False) -> list[dict[str, Any]]:
    """ZO-SGD and the two best methods of the best tuning, at their searched lr, on every seed
    (``only_finished``: the runs that ran to their end, running none)."""
    out = []
    for name, peft, lr, seed, centralized, path in seed_cells(a, rows):
        if only_finished and not ((path / "summary.json").exists() if centralized else finished(path)):
            continue
        r = run_cell(a, path, scenario(a, name, peft, lr, seed), centralized=centralized)
        out.append({"method": name, "peft": peft, "lr": lr, "seed": seed,
                    "setting": "centralized" if centralized else "federated", **r})
    return out


def _ci(interval: list[float] | None) -> str:
    return f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval and interval[0] is not None else ""


def format_table(result: dict[str, Any]) -> str:
    """Markdown: the search (dev and test accuracy per cell) and, once run, the seeds."""
    target = result.get("target", TARGET)
    lines = [f"## Search (seed 0; ranked by dev; {result.get('cells_finished', 'all')} cells finished)", "",
             ("| tuning | method | lr | rounds | fleet forwards | dev accuracy [95 %] | test accuracy [95 %] | host min "
             f"| device min | fleet forwards to dev {target:.2f} [95 %] (estimate) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["search"]:
        lines.append(f"| {r['peft']} | {r['method']} | {r['lr']:g} | {r['rounds']} | {r['forwards']} | "
                     f"{r['initial_dev_accuracy']:.3f} -> {r['dev_accuracy']:.3f}{_ci(r['dev_interval'])} "
                     f"(n {r['dev_n']}) | {r['test_accuracy']:.3f}{_ci(r['test_interval'])} (n {r['test_n']}) | "
                     f"{(r['host_seconds'] or 0) / 60:.0f} | {(r['sim_seconds'] or 0) / 60:.1f} | "
                     f"{extrapolation_cell(r['extrapolation'])} |")
    clocks = sorted({str(r.get("clock")) for r in result["search"]})
    lines += ["", (f"Device min: the simulated time of the fleet's rounds (its clients run in parallel on devices "
                   f"as fast as this host; clock: {', '.join(clocks)}). The last column is an estimate: dev accuracy fitted against log(forward passes) (weighted least "
              f"squares over the cell's evaluated rounds), solved for {target:.2f}; the range is the slope's 95 % "
              "interval, unbounded where the slope could be zero (`analysis/experiments/zo_efficacy_report.py`).")]
    if result.get("summary"):
        lines += ["", f"## Seeds (test accuracy; {result.get('seeds_finished', 'all')} runs finished)", "",
                  *seeds_table(result["summary"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run a phase and write the results (the search is read back for the seeds phase)."""
    p = argparse.ArgumentParser(prog="python -m analysis.experiments.zo_efficacy", description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=("search", "seeds", "report"), default="search",
                   help="report: the tables and figure of the finished cells, running none")
    p.add_argument("--out", default="analysis/results/zo_efficacy")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten-tomatoes")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--budget", type=int, default=800, help="forward passes of the whole fleet per cell")
    p.add_argument("--engine", choices=("batched", "inprocess"), default="batched", help="engine of the federated runs")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eps", type=float, default=1e-2)
    p.add_argument("--points", type=int, default=3, help="test evaluations per run (besides round 0)")
    p.add_argument("--search-eval", type=int, default=300, help="dev examples per evaluation during a run")
    p.add_argument("--eval-examples", type=int, default=None, help="test examples scored per run (default: all 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", default="reference-host",
                   help="price the cells' device time with this calibration (a catalog name or a file; the runs "
                        "keep their own FLOP clock and are repriced, exactly: fedzo calibrate --reprice); none: "
                        "report the runs' own clock")
    a = p.parse_args(argv)
    rows = search(a, only_finished=a.phase == "report")
    for r in rows:
        r["extrapolation"] = cell_extrapolation(r)
    result: dict[str, Any] = {"command": "python -m analysis.experiments.zo_efficacy " + " ".join(
        sys.argv[1:] if argv is None else argv), "setting": {k: v for k, v in vars(a).items() if k != "phase"},
        "methods": {n: m.label for n, m in METHODS.items()}, "search": rows, "target": TARGET,
        "cells_finished": f"{len(rows)} of {len(grid())}"}
    if a.phase == "seeds" or (a.phase == "report" and rows):
        result["seeds"] = seeds_phase(a, rows, only_finished=a.phase == "report")
        result["seeds_finished"] = f"{len(result['seeds'])} of {len(seed_cells(a, rows))}"
        result["summary"] = summarize_seeds(result["seeds"], len(a.seeds))
        result["best_method"] = result["summary"]["best_method"]
        result["best_federated_test_accuracy"] = result["summary"]["best_federated_test_accuracy"]
    write_results(Path(a.out), result, format_table)
    if rows:
        figure(rows, Path(a.out) / "accuracy_vs_forwards.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
