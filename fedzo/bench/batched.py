"""`fedzo bench batched`: host seconds per round, batched engine vs in-process, same run.

For each participant count P the scenario runs once per engine in this process (``repeats``
times each, alternating), with P clients sampled per round (the fleet section dropped: only host time is
measured here, every client gets the default host profile). Reported per P: the median
host seconds of the rounds without evaluation (all but the last) for each engine, their ratio
(``inprocess_over_batched``: the speed-up), whether the two update logs are bitwise
equal, and how the batched engine ran its rounds.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
from pathlib import Path
from typing import Any

from fedzo.config.scenario import Scenario, load_scenario
from fedzo.errors import ConfigError


def _variant(base: Scenario, participants: int, rounds: int, batched: dict[str, Any]) -> Scenario:
    data = base.model_dump()
    fed = data["federation"]
    fed.update(num_clients=max(participants, fed["num_clients"]), clients_per_round=participants,
               participation=None, rounds=rounds, eval_every=rounds, min_clients=1)
    fed["batched"] |= batched
    data["fleet"] = None
    data["out"] = None
    return Scenario.model_validate(data)


def _rounds(run: Path) -> list[Any]:
    from fedzo.runs import RunDir

    return [r for r in RunDir.open(run).rounds() if r.round > 0]


def _round_seconds(run: Path) -> list[float]:
    rounds = _rounds(run)
    cum = [0.0] + [r.host_seconds or 0.0 for r in rounds]
    # the last round also evaluates: left out
    return [b - a for a, b in itertools.pairwise(cum[:-1])]


def run_bench(scenario: str, participants: list[int], rounds: int = 3,
              batched: dict[str, Any] | None = None, repeats: int = 1) -> dict[str, Any]:
    """Per participant count: host s/round in-process and batched, the ratio, equality.

    ``batched``: ``federation.batched`` keys to override. ``repeats``: how many times each
    pair of runs is repeated (in-process, batched, in-process, ...); the figures are medians
    over every timed round of every repeat, so a neighbour's burst moves them less.
    """
    from fedzo.federation.run import run_federated

    if rounds < 2:
        raise ConfigError(f"--rounds: {rounds} is too few; allowed: >= 2 (the last round evaluates and is not timed)")
    base = load_scenario(scenario)
    rows = []
    sc = base
    with tempfile.TemporaryDirectory(prefix="fedzo-bench-batched-") as tmp:
        for p in participants:
            sc = _variant(base, p, rounds, batched or {})
            secs: dict[str, list[float]] = {"inprocess": [], "batched": []}
            logs: dict[str, set[bytes]] = {"inprocess": set(), "batched": set()}
            for rep in range(repeats):
                for engine in ("inprocess", "batched"):
                    out = Path(tmp) / f"{p}-{engine}-{rep}"
                    run_federated(sc, out, engine=engine)
                    secs[engine] += _round_seconds(out)
                    logs[engine].add((out / "update_log.jsonl").read_bytes())
            notes = sorted({str(r.batching) for r in _rounds(Path(tmp) / f"{p}-batched-0")})
            one, joint = statistics.median(secs["inprocess"]), statistics.median(secs["batched"])
            rows.append({"participants": p, "inprocess_seconds_per_round": one, "batched_seconds_per_round": joint,
                         "inprocess_over_batched": one / joint, "rounds_timed": len(secs["batched"]),
                         "inprocess_round_seconds": secs["inprocess"], "batched_round_seconds": secs["batched"],
                         "update_logs_bitwise_equal": logs["inprocess"] == logs["batched"], "batching": notes})
    return {"scenario": scenario, "batched": sc.federation.batched.model_dump(), "model": base.model.name,
            "peft": base.model.peft, "local_steps": base.federation.local_steps, "batch_size": base.data.batch_size,
            "repeats": repeats, "results": rows}


def _range(r: dict[str, Any], engine: str) -> str:
    """min-max of the timed rounds (reports written before they were kept: "-")."""
    secs = r.get(f"{engine}_round_seconds")
    return f"{min(secs):.3f}-{max(secs):.3f}" if secs else "-"


def format_report(report: dict[str, Any]) -> str:
    """A table of the report: medians, the speed-up, and the range over the timed rounds."""
    title = (f"{report['scenario']} ({report['model']}, {report['peft']}, K = {report['local_steps']}, "
             f"batch {report['batch_size']}, {report['batched']}): host s per round, median over "
             f"{report['repeats']} repeat(s) of each run")
    lines = [title,
             "participants  in-process  batched  speed-up  rounds  in-process range  batched range  logs bitwise  batching"]
    for r in report["results"]:
        lines.append(f"{r['participants']:>12}  {r['inprocess_seconds_per_round']:>10.3f}  "
                     f"{r['batched_seconds_per_round']:>7.3f}  {r['inprocess_over_batched']:>7.2f}x  {r['rounds_timed']:>6}  "
                     f"{_range(r, 'inprocess'):>16}  {_range(r, 'batched'):>13}  "
                     f"{r['update_logs_bitwise_equal']!s:>12}  {' | '.join(r['batching'])}")
    return "\n".join(lines)
