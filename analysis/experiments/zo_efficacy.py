"""ZO methods at a fixed forward-pass budget: which one gains most, federated (issue 17).

Every cell is one federated run of the same fleet (``--clients`` clients, all taking part
in every round, K local steps each) on the model and task given, tuning ``prompt`` or
``lora`` parameters with one method of :data:`METHODS`. A cell gets the same number of
forward passes over the whole fleet whatever its method: ``rounds = budget / (clients x K
x forward passes per step)``; a step costs 2q forwards (central differences), q + 1
(``fzoo``) or 3 (a tangent forward, charged as three: the forward and its tangent's
matmuls). Each run evaluates on the test split at a few points, so accuracy is drawn
against fleet forward passes and against simulated device time (the run's own clock).

Two phases, each resumable (a cell whose ``summary.json`` exists is reused, a cut one is
resumed)::

    python -m analysis.experiments.zo_efficacy --phase search   # every method x tuning x lr, seed 0
    python -m analysis.experiments.zo_efficacy --phase seeds    # ZO-SGD and the two best, 3 seeds,
                                                                # federated and centralized

The search ranks each method by its best learning rate's final test accuracy (on
``--search-eval`` examples, with its interval); the seeds phase reruns ZO-SGD and the two
best methods of each tuning at that rate on ``--seeds``, federated and as one centralized
``fedzo train`` run with the same forward passes, each scored on ``--eval-examples`` test
examples. ``results.json`` carries ``best_method`` and ``best_federated_test_accuracy``
(mean over seeds of the best method) once the seeds phase has run. Defaults are
SmolLM2-135M on Rotten Tomatoes; ``--model tiny-llama --task synthetic-sentiment-large``
runs in seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analysis.experiments.common import run_fedzo, write_results


@dataclass(frozen=True)
class Method:
    """A ZO method as scenario keys, its forward passes per step and the learning rates searched."""

    label: str
    zo: dict[str, Any]
    forwards: int
    lrs: dict[str, tuple[float, ...]]  # by tuning kind
    server: dict[str, Any] = field(default_factory=dict)  # federation.server_optimizer (federated only)


LRS = {"prompt": (1e-4, 1e-3, 1e-2), "lora": (1e-5, 1e-4, 1e-3)}
METHODS: dict[str, Method] = {
    "zo-sgd": Method("ZO-SGD (central, q = 1)", {"estimator": "central", "q": 1}, 2, LRS),
    "fzoo": Method("FZOO-style (q = 4 Rademacher, normalized)",
                   {"estimator": "fzoo", "q": 4, "distribution": "rademacher"}, 5, {
                       "prompt": (1e-3, 1e-2, 1e-1), "lora": (1e-4, 1e-3, 1e-2)}),
    "sparse": Method("Sparse MeZO-style (magnitude mask, 10 %)", {"mask": "magnitude", "mask_density": 0.1}, 2, LRS),
    "forward-grad": Method("forward gradient (jvp)", {"estimator": "forward-grad"}, 3, LRS),
    "server-adam": Method("ZO-SGD + server Adam (FedAdam)", {"estimator": "central", "q": 1}, 2,
                          {"prompt": (1e-4, 1e-3, 1e-2), "lora": (1e-5, 1e-4, 1e-3)},
                          server={"name": "adam"}),
}
TUNINGS = ("prompt", "lora")


def cell_rounds(a: argparse.Namespace, method: Method) -> int:
    """Rounds that spend the budget of fleet forward passes (at least 1)."""
    return max(1, a.budget // (a.clients * a.local_steps * method.forwards))


def scenario(a: argparse.Namespace, name: str, peft: str, lr: float, seed: int, eval_examples: int) -> dict[str, Any]:
    """The federated scenario of one cell (version-2 keys)."""
    m = METHODS[name]
    rounds = cell_rounds(a, m)
    # server Adam moves each coordinate by about its own lr per round: the clients take the searched lr
    # for ZO-SGD's default (the middle of the grid), the server the searched one
    client_lr = LRS[peft][1] if m.server else lr
    fed: dict[str, Any] = {"num_clients": a.clients, "clients_per_round": a.clients, "rounds": rounds,
                           "local_steps": a.local_steps, "eval_every": max(1, rounds // a.points),
                           "catch_up": "replay", "round_timeout": 3600}
    if m.server:
        fed["server_optimizer"] = {**m.server, "lr": lr}
    return {"version": 2, "name": f"efficacy-{name}-{peft}", "seed": seed,
            "model": {"name": a.model, "peft": peft},
            "data": {"task": a.task, "batch_size": a.batch_size, "eval_split": "test", "eval_examples": eval_examples,
                     **({"train_examples": a.train_examples} if a.train_examples else {})},
            "zo": {"eps": a.eps, **m.zo}, "optimizer": {"name": "zo-sgd", "lr": client_lr},
            "runtime": {"device": "cpu", "threads": a.threads}, "federation": fed}


def run_cell(a: argparse.Namespace, path: Path, sc: dict[str, Any], *, centralized: bool = False) -> dict[str, Any]:
    """Run (or reuse, or resume) one cell; its curve and final accuracy."""
    if not (path / "summary.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if centralized:  # the same forward passes in one process: steps = fleet steps
            fed = sc.pop("federation")
            sc["steps"] = fed["rounds"] * fed["num_clients"] * fed["local_steps"]
            sc["eval_every"] = max(1, sc["steps"] // a.points)
        config = path.parent / f"{path.name}.yaml"
        config.write_text(yaml.safe_dump(sc, sort_keys=False), encoding="utf-8")
        resume = (path / "metrics.jsonl").exists()
        where = ["--resume", str(path)] if resume else [str(config), "--out", str(path)]
        run_fedzo(path, "train" if centralized else "run", *where, "--no-progress",
                  *([] if centralized else ["--no-plots"]))
    summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    curve = [json.loads(x) for x in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    points = [{"round": r["round"], "accuracy": r["eval_accuracy"], "n": r.get("eval_n"),
               "interval": [r.get("eval_accuracy_low"), r.get("eval_accuracy_high")],
               "sim_seconds": r.get("sim_seconds"), "host_seconds": r.get("host_seconds")}
              for r in curve if r.get("kind") == "round" and r.get("eval_accuracy") is not None]
    return {"final_accuracy": summary["final_accuracy"], "initial_accuracy": summary["initial_accuracy"],
            "interval": summary.get("final_accuracy_interval"), "eval_n": summary.get("eval_n"),
            "sim_seconds": summary.get("sim_seconds"), "host_seconds": summary.get("host_seconds"), "curve": points}


def search(a: argparse.Namespace) -> list[dict[str, Any]]:
    """Every method x tuning x learning rate on seed 0."""
    rows = []
    for peft in TUNINGS:
        for name, m in METHODS.items():
            for lr in m.lrs[peft]:
                path = Path(a.out) / "runs" / "search" / f"{name}-{peft}-{lr:g}"
                r = run_cell(a, path, scenario(a, name, peft, lr, 0, a.search_eval))
                rows.append({"method": name, "peft": peft, "lr": lr, "rounds": cell_rounds(a, m),
                             "forwards": cell_rounds(a, m) * a.clients * a.local_steps * m.forwards, **r})
    return rows


def best_per_method(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """By tuning, each method's best search row (highest final accuracy, then the smaller lr)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        cur = out.setdefault(r["peft"], {}).get(r["method"])
        if cur is None or (r["final_accuracy"], -r["lr"]) > (cur["final_accuracy"], -cur["lr"]):
            out[r["peft"]][r["method"]] = r
    return out


def chosen(best: dict[str, dict[str, Any]]) -> list[str]:
    """ZO-SGD and the two best other methods of one tuning."""
    others = sorted((n for n in best if n != "zo-sgd"), key=lambda n: -best[n]["final_accuracy"])
    return ["zo-sgd", *others[:2]]


def seeds_phase(a: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ZO-SGD and the two best methods per tuning, at their searched lr, on every seed."""
    out = []
    for peft, best in best_per_method(rows).items():
        for name in chosen(best):
            lr = best[name]["lr"]
            for seed in a.seeds:
                base = Path(a.out) / "runs" / "seeds" / f"{name}-{peft}-s{seed}"
                sc = scenario(a, name, peft, lr, seed, a.eval_examples)
                fed = run_cell(a, base, json.loads(json.dumps(sc)))
                out.append({"method": name, "peft": peft, "lr": lr, "seed": seed, "setting": "federated", **fed})
                if not METHODS[name].server:  # a server optimizer has no centralized counterpart
                    cen = run_cell(a, base.with_name(base.name + "-central"), sc, centralized=True)
                    out.append({"method": name, "peft": peft, "lr": lr, "seed": seed, "setting": "centralized", **cen})
    return out


def summarize(seed_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread per (method, tuning, setting); the best federated method."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in seed_rows:
        groups.setdefault((r["method"], r["peft"], r["setting"]), []).append(r["final_accuracy"])
    table = [{"method": m, "peft": p, "setting": s, "seeds": len(v), "mean": statistics.fmean(v),
              "sd": statistics.stdev(v) if len(v) > 1 else None} for (m, p, s), v in sorted(groups.items())]
    fed = [t for t in table if t["setting"] == "federated"]
    best = max(fed, key=lambda t: t["mean"], default=None)
    return {"table": table, "best_method": None if best is None else f"{best['method']} ({best['peft']})",
            "best_federated_test_accuracy": None if best is None else best["mean"]}


def format_table(result: dict[str, Any]) -> str:
    """Markdown: the search (final accuracy per lr) and, once run, the seeds."""
    lines = ["## Search (seed 0)", "", "| tuning | method | lr | rounds | fleet forwards | test accuracy [95 %] |",
             "|---|---|---|---|---|---|"]
    for r in result["search"]:
        lo, hi = r["interval"] or (None, None)
        ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        lines.append(f"| {r['peft']} | {r['method']} | {r['lr']:g} | {r['rounds']} | {r['forwards']} | "
                     f"{r['final_accuracy']:.3f}{ci} (n {r['eval_n']}) |")
    if result.get("summary"):
        lines += ["", "## Seeds", "", "| tuning | method | setting | seeds | test accuracy mean ± sd |", "|---|---|---|---|---|"]
        for t in result["summary"]["table"]:
            sd = f" ± {t['sd']:.3f}" if t["sd"] is not None else ""
            lines.append(f"| {t['peft']} | {t['method']} | {t['setting']} | {t['seeds']} | {t['mean']:.3f}{sd} |")
        s = result["summary"]
        lines += ["", f"Best federated: {s['best_method']}, {s['best_federated_test_accuracy']:.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run a phase and write the results (the search is read back for the seeds phase)."""
    p = argparse.ArgumentParser(prog="python -m analysis.experiments.zo_efficacy", description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=("search", "seeds"), default="search")
    p.add_argument("--out", default="analysis/results/zo_efficacy")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten-tomatoes")
    p.add_argument("--train-examples", type=int, default=None)
    p.add_argument("--budget", type=int, default=2400, help="forward passes of the whole fleet per cell")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eps", type=float, default=1e-2)
    p.add_argument("--points", type=int, default=3, help="test evaluations per run (besides round 0)")
    p.add_argument("--search-eval", type=int, default=300, help="test examples per search evaluation")
    p.add_argument("--eval-examples", type=int, default=1000, help="test examples per seeds-phase evaluation")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    rows = search(a)
    result: dict[str, Any] = {"command": "python -m analysis.experiments.zo_efficacy " + " ".join(
        sys.argv[1:] if argv is None else argv), "setting": {k: v for k, v in vars(a).items() if k != "phase"},
        "methods": {n: m.label for n, m in METHODS.items()}, "search": rows}
    if a.phase == "seeds":
        result["seeds"] = seeds_phase(a, rows)
        result["summary"] = summarize(result["seeds"])
        result["best_method"] = result["summary"]["best_method"]
        result["best_federated_test_accuracy"] = result["summary"]["best_federated_test_accuracy"]
    write_results(Path(a.out), result, format_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
