"""`fedzo bench batched`: host seconds per round, batched engine vs in-process, same run.

For each participant count P the scenario runs once per engine in this process (``repeats``
times each, alternating), with P clients sampled per round (the fleet section dropped: only
host time is measured here, every client gets the default host profile; evaluation cut to
one batch). Reported per P: the median host seconds per round (a round's own: training,
aggregation and replay, evaluation excluded) for each engine, their ratio
(``inprocess_over_batched``: the speed-up), whether the two update logs are bitwise equal
and, where not, their scalars' largest difference (a joint pass of another shape rounds
the losses differently on some CPUs), and how the batched engine ran its rounds. ``fedzo bench engines`` times every engine over
a fixed suite of cases.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from fedzo.errors import ConfigError


def run_bench(scenario: str, participants: list[int], rounds: int = 3,
              batched: dict[str, Any] | None = None, repeats: int = 1) -> dict[str, Any]:
    """Per participant count: host s/round in-process and batched, the ratio, equality.

    ``batched``: ``federation.batched`` keys to override. ``repeats``: how many times each
    pair of runs is repeated (in-process, batched, in-process, ...); the figures are medians
    over every round of every repeat, so a neighbour's burst moves them less.
    """
    from fedzo.bench.engines import log_difference, time_engines, variant

    if rounds < 1:
        raise ConfigError(f"--rounds: {rounds} is too few; allowed: >= 1")
    rows = []
    sc = None
    with tempfile.TemporaryDirectory(prefix="fedzo-bench-batched-") as tmp:
        for p in participants:
            sc = variant(scenario, p, rounds, batched=batched)
            t = time_engines(sc, ("inprocess", "batched"), repeats, Path(tmp) / str(p))
            secs, logs, notes = t.secs, t.logs, t.notes
            one, joint = statistics.median(secs["inprocess"]), statistics.median(secs["batched"])
            rows.append({"participants": p, "inprocess_seconds_per_round": one, "batched_seconds_per_round": joint,
                         "inprocess_over_batched": one / joint, "rounds_timed": len(secs["batched"]),
                         "inprocess_round_seconds": secs["inprocess"], "batched_round_seconds": secs["batched"],
                         "update_logs_bitwise_equal": logs["inprocess"] == logs["batched"],
                         "scalars_max_difference": max(log_difference(x, y, relative=False)
                                                       for x in logs["batched"] for y in logs["inprocess"]),
                         "batching": notes})
    assert sc is not None
    base = sc.model
    return {"scenario": scenario, "batched": sc.federation.batched.model_dump(), "model": base.name,
            "peft": base.peft, "local_steps": sc.federation.local_steps, "batch_size": sc.data.batch_size,
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
