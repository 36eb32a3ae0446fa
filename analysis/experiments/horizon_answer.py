"""The answer of experiment 1 at its horizon, computed from the recorded dev curves.

Pure functions over evaluated points (round, simulated minutes, dev accuracy, examples), so
that the rule and the crossover are tested on curves made by hand:

* :func:`mean_curve`: the seeds' curves of one contender averaged point by point (the
  runs evaluate the same rounds; each seed's simulated time differs a little, so the
  mean time is used), over the rounds every seed reached;
* :func:`horizon`: the common horizon. 60 simulated minutes, extended (up to 120) while
  the ZO dev curve still rises: at a candidate horizon H (each ZO evaluation time from 60
  minutes on) the moving average of the last 3 evaluations must have gained at most 1
  point over the last third of the run (from 2H/3 to H); the first H that passes is the
  horizon, else the cap;
* :func:`crossover`: the simulated time of the last change of leader to ZO after which ZO
  leads backprop on dev until the horizon, or None when backprop leads (or ties) there.
  Both curves are step functions (the accuracy of the last evaluation at or before t) and
  are compared at every evaluation time of either, from the first time both are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedzo.stats import wilson_interval

START_MINUTES = 60.0
CAP_MINUTES = 120.0
WINDOW = 3  # evaluations in the moving average
MAX_GAIN = 0.01  # accuracy: 1 point


@dataclass(frozen=True)
class Point:
    """One evaluation: after ``round`` rounds, at ``minutes`` simulated minutes."""

    round: int
    minutes: float
    accuracy: float
    n: int


def dev_curve(run_dir: str) -> list[Point]:
    """The evaluated rounds of one run directory, in order."""
    from fedzo.reporting.rundir import load_run

    run = load_run(run_dir)
    return [Point(r.round, (r.sim_seconds or 0.0) / 60.0, r.eval_accuracy, r.eval_n or 0)
            for r in run.eval_rounds if r.eval_accuracy is not None]


def last_minutes(run_dir: str) -> float:
    """Simulated minutes at the last round a run recorded (evaluated or not)."""
    from fedzo.reporting.rundir import load_run

    return max(((r.sim_seconds or 0.0) / 60.0 for r in load_run(run_dir).rounds), default=0.0)


def mean_curve(curves: Sequence[Sequence[Point]]) -> list[Point]:
    """Point-by-point mean over seeds, on the evaluated rounds every seed reached; ``n`` is
    the pooled number of examples (for the interval of the mean accuracy)."""
    if not curves:
        return []
    common = set.intersection(*({p.round for p in c} for c in curves))
    out = []
    for rnd in sorted(common):
        pts = [next(p for p in c if p.round == rnd) for c in curves]
        out.append(Point(rnd, sum(p.minutes for p in pts) / len(pts), sum(p.accuracy for p in pts) / len(pts),
                         sum(p.n for p in pts)))
    return out


def _moving_average(points: Sequence[Point], upto: float, window: int = WINDOW) -> float | None:
    """Mean accuracy of the last ``window`` evaluations at or before ``upto`` minutes."""
    known = [p.accuracy for p in points if p.minutes <= upto]
    return sum(known[-window:]) / len(known[-window:]) if known else None


def horizon(zo: Sequence[Point], finished: bool, start: float = START_MINUTES, cap: float = CAP_MINUTES,
            max_gain: float = MAX_GAIN) -> dict[str, Any]:
    """The common horizon from the ZO dev curve (see the module doc), with the gain checked
    at each candidate. A curve still rising at its last evaluation gives the cap's last
    evaluation when the runs are ``finished`` (they run to the cap), else no horizon yet."""
    trace = []
    for p in zo:
        if not start <= p.minutes <= cap:
            continue
        now, before = _moving_average(zo, p.minutes), _moving_average(zo, 2.0 * p.minutes / 3.0)
        gain = None if now is None or before is None else now - before
        trace.append({"minutes": p.minutes, "moving_average": now, "moving_average_two_thirds": before, "gain": gain})
        if gain is not None and gain <= max_gain:
            return {"minutes": p.minutes, "rule": "flat", "trace": trace}
    if finished and trace:
        return {"minutes": trace[-1]["minutes"], "rule": "cap (still rising)", "trace": trace}
    last = zo[-1].minutes if zo else 0.0
    return {"minutes": None, "rule": f"not yet: the ZO curve ends at {last:.1f} min, still rising", "trace": trace}


def at(points: Sequence[Point], t: float) -> Point | None:
    """The last evaluation at or before ``t`` minutes (the step function)."""
    known = [p for p in points if p.minutes <= t]
    return known[-1] if known else None


def crossover(zo: Sequence[Point], bp: Sequence[Point], horizon_minutes: float) -> dict[str, Any]:
    """When ZO takes the lead for good before ``horizon_minutes`` (see the module doc), with
    both accuracies and their 95 % Wilson intervals at that time and at the horizon."""
    if not zo or not bp:
        return {"crossover_minutes": None, "leader_at_horizon": None, "why": "a curve is empty"}
    first = max(zo[0].minutes, bp[0].minutes)
    times = sorted({p.minutes for p in (*zo, *bp) if first <= p.minutes <= horizon_minutes} | {horizon_minutes})
    leaders = []
    for t in times:
        a, b = at(zo, t), at(bp, t)
        assert a is not None and b is not None
        leaders.append((t, "zo" if a.accuracy > b.accuracy else "bp" if b.accuracy > a.accuracy else "tie"))

    def both(t: float) -> dict[str, Any]:
        a, b = at(zo, t), at(bp, t)
        assert a is not None and b is not None
        return {"minutes": t, "zo_accuracy": a.accuracy, "zo_interval": list(wilson_interval(a.accuracy, a.n)),
                "bp_accuracy": b.accuracy, "bp_interval": list(wilson_interval(b.accuracy, b.n))}

    end = leaders[-1][1]
    result: dict[str, Any] = {"leader_at_horizon": end, "at_horizon": both(horizon_minutes),
                              "bp_slower_for_zo_lead": bp_slower_for_zo_lead(zo, bp, horizon_minutes),
                              "lead_changes": [{"minutes": t, "new_leader": w} for (t, w), (_, prev)
                                               in zip(leaders[1:], leaders[:-1], strict=True) if w != prev]}
    if end != "zo":
        return {"crossover_minutes": None, **result}
    since = len(leaders) - 1
    while since > 0 and leaders[since - 1][1] == "zo":
        since -= 1
    t = leaders[since][0]
    return {"crossover_minutes": t, "zo_led_from_the_start": since == 0, "at_crossover": both(t), **result}


def bp_slower_for_zo_lead(zo: Sequence[Point], bp: Sequence[Point], horizon_minutes: float) -> float | None:
    """How many times longer a backprop round would have to take, relative to a ZO round,
    for ZO to lead at the horizon (None where ZO leads there already, or backprop leads from
    its first evaluation on).

    On a board with another backprop/ZO speed ratio the ZO curve and the horizon stay where
    they are and backprop's curve stretches along the time axis by the change ``k`` of that
    ratio: backprop's accuracy at the horizon becomes its accuracy here at ``H / k``. ZO leads
    at ``H`` once that is below ZO's accuracy at ``H``, i.e. once ``H / k`` falls before the
    first evaluation from which backprop stays at or above it: ``k > H / T``. The stretch is
    exact for a change of whole-round time (compute and transfers alike); a change of the
    compute price alone stretches backprop's rounds less, as their transfers keep their time."""
    a, b = at(zo, horizon_minutes), at(bp, horizon_minutes)
    if a is None or b is None or a.accuracy > b.accuracy:
        return None
    since = None
    for p in bp:
        if p.minutes > horizon_minutes:
            break
        if p.accuracy >= a.accuracy:
            since = p.minutes if since is None else since
        else:
            since = None
    return None if not since else horizon_minutes / since


def format_answer(result: dict[str, Any]) -> str:
    """The answer as a markdown table (per seed and on the mean curve)."""
    h = result["horizon"]
    lines = [f"Common horizon: {h['minutes']:.1f} simulated minutes ({h['rule']})" if h["minutes"] is not None
             else "Common horizon: not reached yet", "",
             ("| curve | crossover (sim. min) | leader at horizon | ZO dev at horizon | BP dev at horizon "
              "| BP rounds slower for a ZO lead |"),
             "|---|---|---|---|---|---|"]
    for row in result["crossovers"]:
        c = row.get("at_horizon")
        zo_bp = ("-", "-") if c is None else (
            f"{c['zo_accuracy']:.3f} ({c['zo_interval'][0]:.3f}-{c['zo_interval'][1]:.3f})",
            f"{c['bp_accuracy']:.3f} ({c['bp_interval'][0]:.3f}-{c['bp_interval'][1]:.3f})")
        cross = "null" if row["crossover_minutes"] is None else f"{row['crossover_minutes']:.1f}"
        k = row.get("bp_slower_for_zo_lead")
        lines.append(f"| {row['curve']} | {cross} | {row.get('leader_at_horizon') or '-'} | {zo_bp[0]} | {zo_bp[1]} "
                     f"| {'-' if k is None else f'> {k:.1f}x'} |")
    if result.get("short_of_horizon"):
        lines += ["", "Provisional: these runs stop before the horizon: " + ", ".join(
            f"{r} at {m:.1f} min" for r, m in result["short_of_horizon"].items())]
    return "\n".join(lines) + "\n"


def _test_cache(out: Any, name: str, seed: int, round_: int) -> Any:
    """Where the test accuracy of one run's model after ``round_`` rounds is cached."""
    return out / "runs" / f"seed{seed}" / f"{name}.test-round{round_}.json"


def kept_round(run: Any) -> int | None:
    """The round of the global weights a FedAvg run keeps (None: it keeps none)."""
    from safetensors import safe_open

    from fedzo.federation.server.protocols.fedavg import CHECKPOINT
    from fedzo.runs import STATE

    path = run / STATE / CHECKPOINT
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return int((f.metadata() or {}).get("round", -1))


def test_at_round(out: Any, name: str, seed: int, round_: int) -> dict[str, Any]:
    """Test accuracy of one run's own global model after ``round_`` rounds (cached next to
    the run): a ZO run's update log replayed that far, a FedAvg run's kept weights, which
    must be that round's (a run paused there, ``horizon --pause-at-round``)."""
    from analysis.experiments.common import cached_evaluation

    run = out / "runs" / f"seed{seed}" / name
    return cached_evaluation(_test_cache(out, name, seed, round_), run, "--run", str(run), "--round", str(round_))


def _test_at(out: Any, name: str, seed: int, point: Point) -> dict[str, Any]:
    """Test accuracy of one run's model after ``point.round`` rounds: from the run itself
    where it can (:func:`test_at_round`), else (a FedAvg run that went on past that round)
    from the scenario run again to that round, which must reproduce the recorded dev
    accuracies of those rounds."""
    from analysis.experiments.common import cached_evaluation, run_scenario
    from analysis.experiments.equal_memory import CONTENDERS
    from analysis.experiments.horizon import overrides
    from fedzo.archives import locate

    run = out / "runs" / f"seed{seed}" / name
    cache = _test_cache(out, name, seed, point.round)
    if name.startswith(("zo", "fg")) or locate(cache).exists() or kept_round(run) == point.round:
        return test_at_round(out, name, seed, point.round)
    again = out / "runs" / f"seed{seed}" / f"{name}-to-round{point.round}"
    settings = overrides(name, seed)
    settings["federation"]["rounds"] = point.round
    run_scenario(CONTENDERS[name][1], again, overrides=settings)
    redone = {p.round: p.accuracy for p in dev_curve(str(again))}
    recorded = {p.round: p.accuracy for p in dev_curve(str(run)) if p.round in redone}
    if recorded != redone:
        raise RuntimeError(f"{again} does not reproduce {run}'s dev accuracies: {recorded} != {redone}")
    return cached_evaluation(cache, again, "--run", str(again))


def answer(out: Any, seeds: Sequence[int], contenders: Sequence[str], *, test: bool = False) -> dict[str, Any]:
    """Horizon, crossovers (ZO against each backprop contender, per seed and on the mean
    curves), test accuracy at the horizon (``test``) and the figure; written under ``out``."""
    from pathlib import Path

    from analysis.experiments.common import spread, write_results

    out = Path(out)
    curves: dict[str, dict[int, list[Point]]] = {}
    finished: dict[str, bool] = {}
    reached: dict[str, float] = {}  # run: its last round's simulated minutes, unfinished runs only
    for name in contenders:
        for seed in seeds:
            run = out / "runs" / f"seed{seed}" / name
            if (run / "metrics.jsonl").exists():
                curves.setdefault(name, {})[seed] = dev_curve(str(run))
                done = (run / "summary.json").exists()
                finished[name] = finished.get(name, True) and done
                if not done:
                    reached[f"seed{seed}/{name}"] = last_minutes(str(run))
    zo_name = next((n for n in contenders if n.startswith("zo")), None)
    if zo_name is None or zo_name not in curves:
        raise SystemExit(f"no ZO run under {out}/runs: nothing to take the horizon from")
    means = {name: mean_curve(list(by_seed.values())) for name, by_seed in curves.items()}
    h = horizon(means[zo_name], finished[zo_name] and len(curves[zo_name]) == len(seeds))
    # an unfinished run that stops before the horizon may still evaluate before it: its value
    # at the horizon is not known yet
    short = {} if h["minutes"] is None else {r: m for r, m in reached.items() if m < h["minutes"]}
    if test and short:
        raise SystemExit(f"--test: these runs stop before the horizon ({h['minutes']:.1f} simulated min), so their "
                         f"last evaluation before it is not known yet: "
                         f"{', '.join(f'{r} at {m:.1f} min' for r, m in short.items())}; resume them past it "
                         "(python -m analysis.experiments.horizon --pause-at-round N for a backprop run)")
    rows: list[dict[str, Any]] = []
    if h["minutes"] is not None:
        for bp in (n for n in curves if n.startswith("bp")):
            for seed in sorted(set(curves[zo_name]) & set(curves[bp])):
                rows.append({"curve": f"seed {seed}: {zo_name} vs {bp}", "seed": seed, "bp": bp,
                             **crossover(curves[zo_name][seed], curves[bp][seed], h["minutes"])})
            rows.append({"curve": f"mean: {zo_name} vs {bp}", "seed": None, "bp": bp,
                         **crossover(means[zo_name], means[bp], h["minutes"])})
    plateau: dict[str, Any] = {}
    if test and h["minutes"] is not None:
        for name, by_seed in curves.items():
            tests = []
            for seed, pts in sorted(by_seed.items()):
                point = at(pts, h["minutes"])
                if point is not None:
                    tests.append({"seed": seed, "round": point.round, **_test_at(out, name, seed, point)})
            if tests:
                plateau[name] = {"per_seed": [{k: t[k] for k in ("seed", "round", "accuracy", "n")} for t in tests],
                                 **spread([t["accuracy"] for t in tests])}
    command = ["python -m analysis.experiments.horizon --answer", *(["--test"] if test else []),
               "--seeds", *map(str, seeds), "--contenders", *contenders]
    if Path(out) != Path("analysis/results/equal_memory/horizon"):
        command += ["--out", str(out)]
    result = {"command": " ".join(command),
              "seeds": {name: sorted(by_seed) for name, by_seed in curves.items()},
              "finished": finished, "short_of_horizon": short, "horizon": h, "crossovers": rows, "plateau_test_accuracy": plateau,
              "mean_curves": {name: [vars(p) for p in pts] for name, pts in means.items()}}
    write_results(out, result, format_answer)
    _figure(curves, means, h["minutes"], out / "dev_vs_time.png")
    if (out.parent / "results.json").exists():  # experiment 1's own results carry the answer
        from analysis.experiments.equal_memory import attach_horizon

        attach_horizon(out.parent)
    return result


def _figure(curves: dict[str, dict[int, list[Point]]], means: dict[str, list[Point]], h: float | None,
            path: Any) -> None:
    """Dev accuracy against simulated minutes: each contender's mean over seeds with a band
    of one standard deviation, and the horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, pts in means.items():
        by_seed = list(curves[name].values())
        sd = [float(np.std([next(p.accuracy for p in c if p.round == m.round) for c in by_seed],
                           ddof=1)) if len(by_seed) > 1 else 0.0 for m in pts]
        x = [p.minutes for p in pts]
        y = [p.accuracy for p in pts]
        (line,) = ax.plot(x, y, label=f"{name} (mean of {len(by_seed)} seed{'s' if len(by_seed) > 1 else ''})")
        ax.fill_between(x, [a - s for a, s in zip(y, sd, strict=True)], [a + s for a, s in zip(y, sd, strict=True)],
                        color=line.get_color(), alpha=0.2)
    if h is not None:
        ax.axvline(h, color="grey", linestyle="--", label=f"horizon {h:.0f} min")
    ax.set_xlabel("simulated minutes")
    ax.set_ylabel("dev accuracy (500 sentences)")
    ax.set_title("Equal memory to the horizon: 8 boards of 1.5 GB")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
