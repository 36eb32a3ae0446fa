"""`fedzo bench faults`: fault injection, crash-resume and Byzantine robustness on the tiny model.

Two parts, all in-process on the config-built tiny model (no assets):

* ``faults``: for each fault kind at ``fraction`` of the participants, one uninterrupted
  run and one run interrupted at a seeded random round, with a torn last line written
  into metrics.jsonl and update_log.jsonl (as a kill in the middle of a write leaves
  them), then resumed. Per kind: ``runs_completed`` (of 2), ``identical_after_resume``
  (same model_sha256), ``lines_lost`` and ``lines_duplicated`` (metric records of the
  uninterrupted run missing from / repeated in the resumed one, timing fields aside),
  and the injected / observed counts.
* ``byzantine``: ``byzantine_fraction`` of the participants send tampered scalars, for
  each of ``byzantine_kinds``; the final accuracy of each aggregator (mean, median,
  trimmed-mean, mean behind the running-median clip, mean of the clients whose reputation
  holds) against the fault-free run; ``persistent``: the same clients lie every round.
  (``scale`` x 1e6 mostly exceeds ``max_abs_scalar`` and is rejected before aggregation;
  ``sign_flip`` and ``random`` reach the aggregator.)
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedzo.config.faults import DELIVERY_FAULTS, ByzantineConfig, FaultsConfig
from fedzo.config.scenario import Scenario
from fedzo.killpoints import Interrupted, interrupt_at
from fedzo.records import HOST_MEASURED_KEYS

TIMING_KEYS = HOST_MEASURED_KEYS | {"sim_seconds", "round_sim_seconds", "sim_start", "sim_download_end",
                                    "sim_replay_end", "sim_compute_end", "sim_end"}
FAULT_KINDS: tuple[str, ...] = (*DELIVERY_FAULTS, "byzantine")
AGGREGATOR_SETTINGS: dict[str, dict[str, Any]] = {
    "mean": {"aggregator": "mean", "reputation": False},
    "median": {"aggregator": "median", "reputation": False},
    "trimmed-mean": {"aggregator": "trimmed-mean", "trim_fraction": 0.2, "reputation": False},
    "running-median-clip": {"aggregator": "mean", "aggregator_clip": "running-median", "clip_multiplier": 3.0,
                            "reputation": False},
    "reputation": {"aggregator": "mean", "reputation": True},
}


def tiny_run_config(*, rounds: int, num_clients: int, faults: FaultsConfig | None = None,
                    eval_examples: int = 64, train_examples: int = 160, lr: float = 2e-3,
                    **fed: Any) -> Scenario:
    """A seconds-long federated run on the tiny model, every client in every round.

    More than 160 training or 120 evaluation examples switch to the large synthetic
    task (10,500 / 750), so a Byzantine table can be measured at a meaningful scale.
    """
    large = train_examples > 840 or eval_examples > 120
    return Scenario.model_validate({
        "name": "bench-faults", "model": {"name": "tiny-llama"}, "runtime": {"device": "cpu", "threads": 1},
        "data": {"task": "synthetic-sentiment-large" if large else "synthetic-sentiment", "batch_size": 8,
                 "train_examples": train_examples, "eval_examples": eval_examples},
        "optimizer": {"lr": lr},
        "federation": {"num_clients": num_clients, "rounds": rounds, "local_steps": 3, "round_timeout": 120, **fed},
        "faults": faults or FaultsConfig()})


def _records(run: Path) -> list[str]:
    """metrics.jsonl records minus timing fields, as canonical JSON strings."""
    out = []
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out.append(json.dumps({k: v for k, v in rec.items() if k not in TIMING_KEYS}, sort_keys=True))
    return out


def crash_resume(cfg: Scenario, work: Path, *, seed: int) -> dict[str, Any]:
    """Uninterrupted run vs run killed at a seeded round (torn last lines) and resumed."""
    from fedzo.federation.run import run_federated

    ref = run_federated(cfg, work / "ref")
    completed = 1
    kill_round = random.Random(seed).randint(2, cfg.federation.rounds)
    cut = work / "cut"
    try:
        with interrupt_at("round-start", kill_round):
            run_federated(cfg, cut)
    except Interrupted:
        pass
    with open(cut / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "client", "rou')
    with open(cut / "update_log.jsonl", "a", encoding="utf-8") as f:
        f.write('{"crc": 0, "da')
    quiet = logging.getLogger("fedzo")
    level, quiet.level = quiet.level, logging.ERROR  # the torn lines are expected here
    try:
        resumed = run_federated(cfg, cut, resume=True)
    finally:
        quiet.setLevel(level)
    completed += 1
    want, have = Counter(_records(work / "ref")), Counter(_records(cut))
    return {
        "runs_completed": completed, "kill_round": kill_round,
        "identical_after_resume": resumed.model_sha256 == ref.model_sha256,
        "lines_lost": sum((want - have).values()), "lines_duplicated": sum((have - want).values()),
        **(ref.faults or {}), "final_accuracy": ref.final_accuracy,
    }


def run_bench(*, rounds: int = 8, num_clients: int = 5, fraction: float = 0.2, byzantine_fraction: float = 0.2,
              byzantine_kinds: Sequence[str] = ("sign_flip", "random", "scale"),
              kinds: Sequence[str] = FAULT_KINDS,
              aggregators: Sequence[str] = tuple(AGGREGATOR_SETTINGS), seed: int = 0, persistent: bool = False,
              eval_examples: int = 64, train_examples: int = 160, lr: float = 2e-3,
              work_dir: str | None = None) -> dict[str, Any]:
    """All figures in one dict (the JSON report)."""
    from fedzo.federation.run import run_federated

    t0 = time.perf_counter()
    sizes = {"eval_examples": eval_examples, "train_examples": train_examples, "lr": lr}
    with tempfile.TemporaryDirectory(prefix="fedzo-bench-faults-", dir=work_dir) as tmp:
        root = Path(tmp)
        faults: dict[str, Any] = {}
        for i, kind in enumerate(kinds):
            fc = (FaultsConfig(seed=seed, byzantine=ByzantineConfig(fraction=fraction, kind=byzantine_kinds[0]))
                  if kind == "byzantine" else FaultsConfig.model_validate({"seed": seed, kind: fraction}))
            cfg = tiny_run_config(rounds=rounds, num_clients=num_clients, faults=fc, min_clients=1,
                                  eval_examples=eval_examples, train_examples=train_examples, lr=lr)
            faults[kind] = crash_resume(cfg, root / kind, seed=seed + i)
        clean = run_federated(tiny_run_config(rounds=rounds, num_clients=num_clients, eval_examples=eval_examples,
                                              train_examples=train_examples, lr=lr), root / "fault-free")
        base = clean.final_accuracy
        byz: dict[str, dict[str, Any]] = {}
        for bkind in byzantine_kinds:
            fc = FaultsConfig(seed=seed, byzantine=ByzantineConfig.model_validate(
                {"fraction": byzantine_fraction, "kind": bkind, "persistent": persistent}))
            byz[bkind] = {}
            for name in aggregators:
                cfg = tiny_run_config(rounds=rounds, num_clients=num_clients, faults=fc, eval_examples=eval_examples,
                                      train_examples=train_examples, lr=lr, **AGGREGATOR_SETTINGS[name])
                s = run_federated(cfg, root / f"byz-{bkind}-{name}")
                totals = s.faults or {}
                byz[bkind][name] = {
                    "final_accuracy": s.final_accuracy,
                    "delta_vs_fault_free": None if base is None or s.final_accuracy is None
                    else s.final_accuracy - base,
                    "injected": totals.get("injected", {}).get(f"byzantine:{bkind}", 0),
                    "rejected": totals.get("rejected", {}), "model_sha256": s.model_sha256}
    return {
        "settings": {"model": "tiny-llama", "rounds": rounds, "num_clients": num_clients, "clients_per_round":
                     num_clients, "fault_fraction": fraction, "seed": seed, **sizes},
        "faults": faults,
        "byzantine": {"fraction": byzantine_fraction, "persistent": persistent, "fault_free_accuracy": base,
                      "initial_accuracy": clean.initial_accuracy, "kinds": byz},
        "seconds": time.perf_counter() - t0,
    }


def markdown_resume_table(r: dict[str, Any]) -> str:
    """The report's kill-and-resume results as the markdown table docs/faults.md shows."""
    lines = [("| fault | runs completed | model identical after resume | metric lines lost | duplicated "
              "| injected / observed |"), "|---|---|---|---|---|---|"]
    for kind, f in r["faults"].items():
        injected = sum(f["injected"].values())
        if f.get("extra_replies"):
            observed = f"{sum(f['extra_replies'].values())} extra replies, never aggregated"
        elif kind == "byzantine":
            observed = f"{injected} tampered replies"
        else:
            observed = ", ".join(f"{k} {v}" for k, v in f["status"].items() if k != "ok")
        label = f"byzantine ({r['settings'].get('byzantine_kind', 'sign_flip')})" if kind == "byzantine" else kind
        lines.append(f"| {label} | {f['runs_completed']}/2 | {'yes' if f['identical_after_resume'] else 'no'} | "
                     f"{f['lines_lost']} | {f['lines_duplicated']} | {injected} / {observed} |")
    return "\n".join(lines) + "\n"


def format_report(r: dict[str, Any]) -> str:
    """Human-readable tables of :func:`run_bench`'s report."""
    s = r["settings"]
    lines = [(f"fault injection: {s['model']}, {s['num_clients']} clients, {s['rounds']} rounds, "
              f"{s['fault_fraction']:.0%} of participants faulty, accuracy on {s.get('eval_examples', 64)} examples"),
             f"{'fault':<14}{'runs ok':>8}{'resume ==':>11}{'lost':>6}{'dup':>5}  injected / observed"]
    for kind, f in r["faults"].items():
        observed = ", ".join(f"{k} {v}" for k, v in f["status"].items())
        lines.append(f"{kind:<14}{f['runs_completed']:>6}/2{f['identical_after_resume']!s:>11}"
                     f"{f['lines_lost']:>6}{f['lines_duplicated']:>5}  {sum(f['injected'].values())} / {observed}")
    b = r["byzantine"]
    lines += ["", (f"Byzantine {b['fraction']:.0%}{' (persistent)' if b.get('persistent') else ''}: fault-free accuracy {b['fault_free_accuracy']:.3f} "
                   f"(initial {b['initial_accuracy']:.3f})"),
              f"{'kind':<11}{'aggregator':<22}{'accuracy':>9}{'delta':>8}  rejected"]
    for bkind, aggs in b["kinds"].items():
        for name, a in aggs.items():
            delta = "n/a" if a["delta_vs_fault_free"] is None else f"{a['delta_vs_fault_free']:+.3f}"
            lines.append(f"{bkind:<11}{name:<22}{a['final_accuracy']:>9.3f}{delta:>8}  {a['rejected'] or '-'}")
    lines.append(f"\n{r['seconds']:.1f} s")
    return "\n".join(lines)
