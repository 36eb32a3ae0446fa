"""OpenMP's wait policy and host seconds per round, alone and beside a second job.

PyTorch's CPU build runs its parallel regions on an OpenMP (libgomp) thread team. After a
region libgomp's threads spin for a while before they sleep (``OMP_WAIT_POLICY`` unset);
``OMP_WAIT_POLICY=PASSIVE`` puts them to sleep at once. Each process sizes its team to
every core, so two fedzo jobs on one host (a search beside the tests, Ray actors of the
simulation engine beside their driver) spin on the cores the other needs.

This script times the engines' rounds on the tiny model (``scenarios/batched-tiny.yaml``,
each round's own host seconds as ``fedzo bench engines`` reads them) under both policies,
once alone and once as two identical processes started together (``twin``)::

    python -m analysis.experiments.omp_wait --out analysis/results/omp_wait

The policy is read when libgomp loads, so every measurement runs in a fresh process with
the variable set (``--worker``). Writes ``results.json`` and ``table.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from analysis.experiments.common import write_results

SCENARIO = "scenarios/batched-tiny.yaml"
CASES = (("inprocess", 100), ("batched", 100), ("simulation", 10))
POLICIES = {"default": None, "passive": "PASSIVE"}


def worker(engine: str, participants: int, rounds: int) -> dict[str, Any]:
    """One run of the tiny scenario on ``engine``: every round's host seconds, and the
    policy this process was started with."""
    from fedzo.bench.engines import time_run, variant

    sc = variant(SCENARIO, participants, rounds)
    with tempfile.TemporaryDirectory(prefix="fedzo-omp-wait-") as tmp:
        secs, _, _, _ = time_run(sc, Path(tmp) / "run", engine)
    return {"round_seconds": secs, "policy": os.environ.get("OMP_WAIT_POLICY")}


def measure(engine: str, participants: int, rounds: int, policy: str | None, copies: int) -> list[dict[str, Any]]:
    """``copies`` worker processes started together under ``policy``: what each one measured."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-m", "analysis.experiments.omp_wait", "--worker", engine, str(participants), str(rounds)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} (OMP_WAIT_POLICY={policy}) exited {p.returncode}")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def run(rounds: int) -> list[dict[str, Any]]:
    """Every case alone and as twins, the policies alternating within each."""
    rows = []
    for engine, participants in CASES:
        for setting, copies in (("alone", 1), ("twin", 2)):
            for name, policy in POLICIES.items():
                per = [w["round_seconds"] for w in measure(engine, participants, rounds, policy, copies)]
                rows.append({"engine": engine, "participants": participants, "setting": setting, "policy": name,
                             "round_seconds": per,
                             "median_seconds_per_round": statistics.median(s for run_ in per for s in run_)})
                print(f"{engine} {participants} {setting} {name}: {rows[-1]['median_seconds_per_round']:.2f} s/round",
                      flush=True)
    return rows


def format_table(result: dict[str, Any]) -> str:
    """Markdown: per case and setting, the median s/round under each policy and their ratio."""
    lines = ["| engine | participants | setting | default s/round | passive s/round | default / passive |",
             "|---|---|---|---|---|---|"]
    by = {(r["engine"], r["participants"], r["setting"], r["policy"]): r["median_seconds_per_round"]
          for r in result["rows"]}
    for engine, participants, setting in dict.fromkeys((r["engine"], r["participants"], r["setting"])
                                                        for r in result["rows"]):
        d, p = by[(engine, participants, setting, "default")], by[(engine, participants, setting, "passive")]
        lines.append(f"| {engine} | {participants} | {setting} | {d:.2f} | {p:.2f} | {d / p:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with ``--worker``, be one measured process) and write the results."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="analysis/results/omp_wait")
    p.add_argument("--rounds", type=int, default=3, help="rounds per run (every round is timed)")
    p.add_argument("--worker", nargs=3, metavar=("ENGINE", "PARTICIPANTS", "ROUNDS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), int(a.worker[2]))))
        return 0
    import torch

    result = {"scenario": SCENARIO, "rounds": a.rounds, "cpus": os.cpu_count(), "torch": torch.__version__,
              "rows": run(a.rounds)}
    write_results(Path(a.out), result, format_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
