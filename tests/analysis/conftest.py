"""Synthetic run directories in the documented run-directory format."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

DEVICES = ("rpi5-8gb", "jetson-orin-nano", "pixel-7")


@pytest.fixture(autouse=True)
def _fedzo_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """The experiment scripts run their `fedzo` commands in the test's process: a fresh
    process per tiny run would spend ~10 s of its ~11 s on imports (tests/analysis/
    test_experiments.py checks the fresh-process path once)."""
    from analysis.experiments import common

    monkeypatch.setattr(common, "IN_PROCESS", True)


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(obj) + "\n" for obj in lines), encoding="utf-8")


def make_federated_run(
    root: Path,
    name: str = "quickstart-zo",
    *,
    rounds: int = 12,
    clients: int = 6,
    per_round: int = 4,
    frontier: bool = True,
    seed: int = 0,
) -> Path:
    """A federated run: eval every 3 rounds, some late/dropped/offline clients."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "scenario.yaml").write_text(f"name: {name}\nrounds: {rounds}\n", encoding="utf-8")
    lines: list[dict[str, Any]] = [{"kind": "round", "round": 0, "eval_accuracy": 0.5}]
    t = host = up = down = 0.0
    accs: list[float] = [0.5]
    peak = 0
    for r in range(1, rounds + 1):
        chosen = rng.sample(range(clients), per_round)
        for c, every in ((1, 4), (2, 5)):  # make sure late and dropped clients appear
            if r % every == 0 and c not in chosen:
                chosen[-1 if c == 1 else 0] = c
        round_end = t
        for c in chosen:
            dl = t + rng.uniform(0.3, 2.0)
            comp = dl + rng.uniform(150, 400) * (1 + c % 3)
            end = comp + rng.uniform(0.2, 1.5)
            status = "ok"
            if c == 1 and r % 4 == 0:
                status = "late"
            if c == 2 and r % 5 == 0:
                status = "dropped"
            mem = 600_000_000 + 10_000_000 * c
            peak = max(peak, mem)
            line: dict[str, Any] = {
                "kind": "client", "round": r, "client": c, "device": DEVICES[c % 3],
                "status": status, "bytes_up": 96, "bytes_down": 410 * r,
                "sim_start": t, "sim_download_end": dl, "sim_compute_end": comp,
                "host_compute_seconds": 3.1, "peak_memory_bytes": mem,
            }
            if status != "dropped":
                line["sim_end"] = end
                round_end = max(round_end, end)
                up += 96
                down += 410 * r
            lines.append(line)
        lines.append({"kind": "client", "round": r, "client": clients + 1, "device": "pixel-7",
                      "status": "offline"})
        host += rng.uniform(20, 40)
        rec: dict[str, Any] = {
            "kind": "round", "round": r, "sim_seconds": round_end, "host_seconds": host,
            "bytes_up": up, "bytes_down": down, "train_loss": 1.0 / r,
            "eval_accuracy": None, "eval_macro_f1": None, "participants": per_round,
            "round_sim_seconds": round_end - t,
        }
        if r % 3 == 0:
            acc = min(0.95, accs[-1] + rng.uniform(0.01, 0.06))
            accs.append(acc)
            rec["eval_accuracy"], rec["eval_macro_f1"] = acc, acc - 0.01
        lines.append(rec)
        t = round_end
    write_jsonl(root / "metrics.jsonl", lines)
    summary = {
        "name": name, "final_accuracy": accs[-1], "best_accuracy": max(accs),
        "sim_seconds": t, "host_seconds": host, "bytes_up": int(up), "bytes_down": int(down),
        "peak_client_memory_bytes": peak, "model_sha256": "ab12cd34" * 8,
        "model": "smollm2-135m", "optimizer": "zo-sgd", "method": "zo",
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if frontier:
        gib = 2**30
        doc = {
            "family": "smollm2",
            "budgets_bytes": [gib // 2, gib, 2 * gib, 4 * gib, 8 * gib],
            "models": [
                {"name": "smollm2-135m", "params": 134515008, "zo_bytes": 0.35 * gib,
                 "bp_bytes": 1.6 * gib},
                {"name": "smollm2-360m", "params": 361821120, "zo_bytes": 0.9 * gib,
                 "bp_bytes": 4.3 * gib},
                {"name": "smollm2-1.7b", "params": 1711376384, "zo_bytes": 3.8 * gib,
                 "bp_bytes": 19.0 * gib},
            ],
        }
        (root / "memory_frontier.json").write_text(json.dumps(doc), encoding="utf-8")
    return root


def make_centralized_run(root: Path, name: str = "central-bp", *, evals: int = 8) -> Path:
    """A `fedzo train` run: no client lines, zero bytes, no simulated time, no frontier."""
    root.mkdir(parents=True)
    lines: list[dict[str, Any]] = [{"kind": "round", "round": 0, "eval_accuracy": 0.5}]
    for i in range(1, evals + 1):
        lines.append({
            "kind": "round", "round": i, "host_seconds": 30.0 * i,
            "bytes_up": 0, "bytes_down": 0, "train_loss": 0.8 / i,
            "eval_accuracy": 0.5 + 0.4 * (1 - 0.7**i), "eval_macro_f1": None,
            "participants": 1,
        })
    write_jsonl(root / "metrics.jsonl", lines)
    summary = {
        "name": name, "final_accuracy": lines[-1]["eval_accuracy"], "best_accuracy": None,
        "sim_seconds": None, "host_seconds": 30.0 * evals, "bytes_up": 0,
        "bytes_down": 0, "peak_client_memory_bytes": None, "model_sha256": "f00d" * 16,
        "model": "smollm2-135m", "optimizer": "fo-adam",
    }
    (root / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return root


@pytest.fixture
def fed_run(tmp_path: Path) -> Path:
    """A federated run directory."""
    return make_federated_run(tmp_path / "runs" / "fed")


@pytest.fixture
def central_run(tmp_path: Path) -> Path:
    """A centralized run directory."""
    return make_centralized_run(tmp_path / "runs" / "central")


@pytest.fixture
def make_fed() -> Any:
    """The federated run builder, for tests that need several or custom runs."""
    return make_federated_run


@pytest.fixture
def jsonl() -> Any:
    """The JSONL writer."""
    return write_jsonl
