"""`fedzo bench engines`: host seconds per round of each engine, measured in one run.

A *case* is a scenario at a number of participants (clients sampled per round). Each
case runs once per engine in this process (``repeats`` times, the engines alternating),
its fleet section dropped (only host time is measured; every client gets the default
host profile) and its evaluation cut to one batch. A round's host seconds are the
engine's own (``host_seconds`` of the round records: training, aggregation and replay,
evaluation excluded), so every round is timed. Reported per case and engine: the median
host seconds per round, client-steps per host second (participants x local steps per
round), the ratio to the in-process engine (``inprocess / engine``: above 1 is faster),
whether the update log equals the in-process one bitwise, and how the batched engine ran.

Beside the engines, each case measures the *forward ceiling*: N rows of the task as the
clients batch them (random batches of ``batch_size``, each padded to its longest) against
the same rows as the batched engine packs them (sorted by length, in passes under the
scenario's ``federation.batched`` caps), N = participants x batch size (at most about
8192 tokens, a sample). When forwards dominate a round, the engine cannot beat this
ratio by much: on a CPU that a model's matmuls already keep busy, what it gains is the
padding it cuts and passes that stay in the caches. The batched engine's own joint
forwards (every turn's packed passes and losses, as it ran them) are timed too:
``forwards_only_over_inprocess`` is the ratio it would reach were every other part of its
rounds (each client's steps, messages, pricing, catch-up) free: the bound that per-client
overhead work cannot lift.

The default suite is the one of issue 16: the tiny model (``scenarios/batched-tiny.yaml``)
at 10, 100 and 1000 participants, and SmolLM2-135M prompt tuning
(``scenarios/quickstart.yaml``) at 10 and 100 participants, one local step, one round.
The report's ``goals`` compare ``batched_over_inprocess_tiny_100`` and
``batched_over_inprocess_smollm2_100`` with the targets set for a 2-core CPU.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import platform
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedzo.errors import ConfigError

ENGINES = ("inprocess", "batched", "simulation")
GOALS = {"batched_over_inprocess_tiny_100": 5.0, "batched_over_inprocess_smollm2_100": 1.2}


@dataclass(frozen=True)
class Case:
    """A scenario timed at several participant counts."""

    name: str
    scenario: str
    participants: tuple[int, ...]
    rounds: int
    local_steps: int | None = None  # None: the scenario's
    simulation_max: int | None = None  # participants above which the simulation engine is left out


# Flower's simulation engine costs about 0.2 host s per tiny-model client and 6-9 s per SmolLM2
# client-step on 2 cores (analysis/results/engines): left out where one case would take
# about a quarter of an hour or more
SUITE = (Case("tiny", "scenarios/batched-tiny.yaml", (10, 100, 1000), rounds=3, simulation_max=100),
         Case("smollm2", "scenarios/quickstart.yaml", (10, 100), rounds=1, local_steps=1, simulation_max=10))


def variant(scenario: str, participants: int, rounds: int, local_steps: int | None = None,
            batched: dict[str, Any] | None = None) -> Any:
    """``scenario`` at ``participants`` per round for ``rounds`` rounds, without fleet or
    output dir, evaluating one batch; ``batched``: ``federation.batched`` keys to override."""
    from fedzo.config.scenario import Scenario, load_scenario

    data = load_scenario(scenario).model_dump()
    fed = data["federation"]
    # no round timeout: every engine does all the work (a reply dropped at the deadline would
    # shorten the round and change the update)
    fed.update(num_clients=max(participants, fed["num_clients"]), clients_per_round=participants,
               participation=None, rounds=rounds, eval_every=rounds, min_clients=1, round_timeout=1e7)
    if local_steps is not None:
        fed["local_steps"] = local_steps
    fed["batched"] |= batched or {}
    data["data"]["eval_examples"] = data["data"]["batch_size"]
    data["fleet"] = None
    data["out"] = None
    return Scenario.model_validate(data)


def time_run(scenario: Any, out: Path, engine: str) -> tuple[list[float], bytes, list[str], float]:
    """Run once; per-round host seconds, the update log, the batching notes and the joint
    forward passes' host seconds per round (batched engine; 0 for the others). A round in
    which not every sampled client's reply was accepted is an error (it did less work)."""
    from fedzo.federation.run import run_federated
    from fedzo.runs import RunDir

    run_federated(scenario, out, engine=engine)
    rounds = [r for r in RunDir.open(out).rounds() if r.round > 0]
    want = scenario.federation.clients_per_round
    short = [f"round {r.round}: {r.participants} of {want}" for r in rounds if r.participants != want]
    if short:
        raise RuntimeError(f"{engine} engine: not every client's reply was accepted ({'; '.join(short)})")
    cum = [0.0] + [r.host_seconds or 0.0 for r in rounds]
    secs = [b - a for a, b in itertools.pairwise(cum)]
    joint = sum(r.joint_forward_seconds or 0.0 for r in rounds) / max(len(rounds), 1)
    return secs, (out / "update_log.jsonl").read_bytes(), sorted({str(r.batching) for r in rounds if r.batching}), joint


def forward_ceiling(scenario: Any, participants: int) -> dict[str, Any]:
    """Seconds of N rows as clients' batches vs as the batched engine's packed passes."""
    import random

    import torch

    from fedzo.calibration.measure import step_times
    from fedzo.federation.transports.batched.joint import blocks, gather, pack, pass_byte_cap, row_lengths, token_bytes
    from fedzo.tasks.objective import build_objective

    obj = build_objective(scenario.model, scenario.data, scenario.runtime, scenario.seed)
    clf, b, caps = obj.classifier, scenario.data.batch_size, scenario.federation.batched
    pool = list(obj.train)
    probe = next(clf.batches(pool[:b], b))
    n = min(participants * b, max(b, 8192 // int(probe.input_ids.shape[1]) // b * b), len(pool))
    picked = random.Random(scenario.seed).sample(pool, n)
    pieces = [next(clf.batches(picked[i:i + b], b)) for i in range(0, n, b)]
    lengths = [w for x in pieces for w in row_lengths(x)]
    owner = [(i, j) for i, x in enumerate(pieces) for j in range(len(x))]
    max_tokens = pass_byte_cap(caps.max_pass_mib, obj.device) / token_bytes(clf.model)
    pad_id = int(clf.tokenizer.pad_token_id or 0)
    passes = [gather(pieces, blocks(p, owner), max(lengths[k] for k in p), pad_id)
              for p in pack(lengths, caps.max_rows, caps.max_padding, max_tokens)]
    pieces, passes = [x.to(obj.device) for x in pieces], [x.to(obj.device) for x in passes]

    def run(batches: list[Any]) -> None:  # every pass, waited for (CUDA runs them asynchronously)
        for x in batches:
            clf.logits(x)
        if obj.device.type == "cuda":
            torch.cuda.synchronize(obj.device)

    with torch.no_grad():
        separate = min(step_times(lambda: run(pieces), 3))
        together = min(step_times(lambda: run(passes), 3))
    return {"rows": n, "batch_size": b, "passes": len(passes),
            "separate_tokens": sum(x.input_ids.numel() for x in pieces),
            "joint_tokens": sum(x.input_ids.numel() for x in passes), "own_tokens": sum(lengths),
            "separate_seconds": separate, "joint_seconds": together, "separate_over_joint": separate / together}


def log_difference(a: bytes, b: bytes, *, relative: bool = True) -> float:
    """Largest difference between the aggregated scalars of two update logs of the same run,
    relative to the largest scalar of ``b`` (inf when their seeds or rounds differ): a
    scale-free measure that a scalar near zero does not inflate. ``relative=False``: the
    absolute difference (to hold against a bound in units of the scalars)."""
    from fedzo.zo.log import UpdateLog

    ea, eb = (UpdateLog.parse(x.decode("utf-8").splitlines(), "bench")[0].entries() for x in (a, b))
    if [(e.round, e.seed) for e in ea] != [(e.round, e.seed) for e in eb]:
        return float("inf")
    scale = (max((abs(y.grad or 0.0) for y in eb), default=0.0) or 1.0) if relative else 1.0
    return max((abs((x.grad or 0.0) - (y.grad or 0.0)) / scale for x, y in zip(ea, eb, strict=True)), default=0.0)


@dataclass
class Timings:
    """What :func:`time_engines` measured: per engine every round's host seconds and the
    distinct update logs; the batched engine's notes and its joint forwards' seconds per round."""

    secs: dict[str, list[float]]
    logs: dict[str, set[bytes]]
    notes: list[str]
    forward_secs: list[float]


def time_engines(scenario: Any, engines: tuple[str, ...], repeats: int, tmp: Path) -> Timings:
    """``scenario`` on each engine ``repeats`` times (the engines alternating)."""
    out = Timings({e: [] for e in engines}, {e: set() for e in engines}, [], [])
    for rep in range(repeats):
        for engine in engines:
            s, log, note, joint = time_run(scenario, tmp / f"{engine}-{rep}", engine)
            out.secs[engine] += s
            out.logs[engine].add(log)
            out.notes = out.notes or (note if engine == "batched" else [])
            if engine == "batched":
                out.forward_secs.append(joint)
    return out


def _row(case: Case, participants: int, engines: tuple[str, ...], repeats: int, tmp: Path) -> dict[str, Any]:
    sc = variant(case.scenario, participants, case.rounds, case.local_steps)
    left_out = [e for e in engines if e == "simulation" and case.simulation_max is not None
                and participants > case.simulation_max]
    engines = tuple(e for e in engines if e not in left_out)
    t = time_engines(sc, engines, repeats, tmp / f"{case.name}-{participants}")
    secs, logs = t.secs, t.logs
    steps = participants * sc.federation.local_steps
    out: dict[str, Any] = {"case": case.name, "participants": participants, "local_steps": sc.federation.local_steps,
                           "rounds_timed": {e: len(v) for e, v in secs.items()}, "batching": t.notes,
                           "forward_ceiling": forward_ceiling(sc, participants), "engines": {},
                           "left_out": dict.fromkeys(left_out, f"more than {case.simulation_max} participants (too slow)")}
    base = statistics.median(secs["inprocess"])
    for e in engines:
        med = statistics.median(secs[e])
        out["engines"][e] = {"seconds_per_round": med, "round_seconds": secs[e],
                             "client_steps_per_host_second": steps / med, "inprocess_over_engine": base / med,
                             "update_log_bitwise_equal_inprocess": logs[e] == logs["inprocess"],
                             "scalars_max_relative_difference": max(log_difference(x, y) for x in logs[e]
                                                                    for y in logs["inprocess"])}
    fwd = statistics.median(t.forward_secs) if t.forward_secs else 0.0
    if fwd > 0:  # the batched engine's rounds, were it to spend nothing beside its joint forwards (none when
        # its clients ran without joint passes, e.g. full-parameter ZO, where each client has its own weights)
        out["engines"]["batched"] |= {"joint_forward_seconds_per_round": fwd, "forwards_only_over_inprocess": base / fwd}
    return out


def check_engines(engines: tuple[str, ...]) -> tuple[str, ...]:
    """The engines to time, in-process first; unknown names and a missing Ray are errors."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ConfigError(f"--engines: {', '.join(unknown)} not known; allowed: {', '.join(ENGINES)}")
    if "simulation" in engines and importlib.util.find_spec("ray") is None:
        raise ConfigError("--engines simulation: Ray is not installed here (pip install 'flwr[simulation]'); "
                          "leave simulation out of --engines")
    return ("inprocess", *[e for e in ENGINES[1:] if e in engines])


def run_bench(cases: tuple[Case, ...] = SUITE, engines: tuple[str, ...] = ENGINES, repeats: int = 1) -> dict[str, Any]:
    """Time every case on every engine; the rows, the headline ratios and the goals."""
    engines = check_engines(engines)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedzo-bench-engines-") as tmp:
        for case in cases:
            for p in case.participants:
                rows.append(_row(case, p, engines, repeats, Path(tmp)))
    import torch

    report: dict[str, Any] = {"host": {"cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__},
                              "engines": list(engines), "repeats": repeats, "results": rows,
                              "cases": [{"name": c.name, "scenario": c.scenario, "rounds": c.rounds,
                                         "local_steps": c.local_steps} for c in cases]}
    for r in rows:
        for e in r["engines"]:
            if e == "inprocess":
                continue
            report[f"{e}_over_inprocess_{r['case']}_{r['participants']}"] = r["engines"][e]["inprocess_over_engine"]
    report["goals"] = {k: {"target": v, "measured": report.get(k), "met": (report[k] >= v) if k in report else None}
                       for k, v in GOALS.items()}
    return report


def format_report(report: dict[str, Any]) -> str:
    """A table: per case and engine, host s per round, client-steps per host s, the ratio."""
    lines = ["case      participants  K  engine      s/round  client-steps/s  vs in-process  log bitwise  batching"]
    for r in report["results"]:
        c = r["forward_ceiling"]
        lines.append(f"{r['case']:<8}  {r['participants']:>12}  forward ceiling: {c['rows']} rows in {c['passes']} "
                     f"packed passes ({c['joint_tokens']} tokens) {c['separate_over_joint']:.2f}x as fast as in "
                     f"batches of {c['batch_size']} ({c['separate_tokens']} tokens)")
        lines += [f"{r['case']:<8}  {r['participants']:>12}  {e} left out: {why}" for e, why in r["left_out"].items()]
        for e, v in r["engines"].items():
            lines.append(f"{r['case']:<8}  {r['participants']:>12}  {r['local_steps']:>1}  {e:<10}  "
                         f"{v['seconds_per_round']:>7.3f}  {v['client_steps_per_host_second']:>14.1f}  "
                         f"{v['inprocess_over_engine']:>12.2f}x  {v['update_log_bitwise_equal_inprocess']!s:>11}  "
                         + (" | ".join(r["batching"]) if e == "batched" else ""))
            if "joint_forward_seconds_per_round" in v:
                lines.append(f"{r['case']:<8}  {r['participants']:>12}  {e} joint forwards: "
                             f"{v['joint_forward_seconds_per_round']:.3f} s/round; with nothing else "
                             f"{v['forwards_only_over_inprocess']:.2f}x in-process")
    for k, g in report["goals"].items():
        got = "not measured" if g["measured"] is None else f"{g['measured']:.2f}x ({'met' if g['met'] else 'not met'})"
        lines.append(f"goal {k} >= {g['target']}x: {got}")
    return "\n".join(lines)
