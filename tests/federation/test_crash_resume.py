"""SIGKILL a `fedzo run` subprocess at a seeded random point, resume it, compare with an
uninterrupted run: same model_sha256, metrics.jsonl with no lost or duplicated records."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCENARIO = """\
version: 2
name: crash-tiny
model: {name: tiny-llama}
data: {task: synthetic-sentiment, train_examples: 128, eval_examples: 32, batch_size: 8}
optimizer: {lr: 0.001}
runtime: {device: cpu, threads: 1}
federation:
  num_clients: 4
  clients_per_round: 2
  rounds: 10
  local_steps: 3
  round_timeout: 120
fleet: {default_profile: laptop-cpu}
faults: {seed: 1, dropout: 0.2, duplicate: 0.2}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}


def _fedzo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedzo.cli", *args], capture_output=True, text=True,
                          env=_env(), timeout=300, check=False)


def _lines(run: Path) -> int:
    p = run / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("crash")
    (d / "crash-tiny.yaml").write_text(SCENARIO)
    return d / "crash-tiny.yaml"


@pytest.fixture(scope="module")
def reference(scenario) -> tuple[Path, dict]:
    out = scenario.parent / "ref"
    proc = _fedzo("run", str(scenario), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("seed,tear", [pytest.param(0, False, marks=pytest.mark.slow), (1, True)])
def test_sigkilled_run_resumes_to_the_same_model(scenario, reference, strip_timings, seed, tear) -> None:
    ref_dir, ref = reference
    total = _lines(ref_dir)
    at = random.Random(seed).randint(2, total - 4)  # kill once metrics.jsonl has >= `at` lines
    out = scenario.parent / f"cut{seed}"
    proc = subprocess.Popen([sys.executable, "-m", "fedzo.cli", "run", str(scenario), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.monotonic() + 240
    while _lines(out) < at and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = _lines(out)
    assert killed_at < total
    if tear:  # a write cut in the middle of a line, in both files
        with open(out / "metrics.jsonl", "a") as f:
            f.write('{"kind": "client", "round": 9')
        with open(out / "update_log.jsonl", "a") as f:
            f.write('{"crc": 1, "data": {"entr')
    res = _fedzo("run", "--resume", str(out))
    assert res.returncode == 0, res.stderr
    if tear:
        assert "metrics.jsonl" in res.stderr and "truncated or corrupted" in res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_sha256"] == ref["model_sha256"]
    assert summary["faults"] == ref["faults"]
    assert strip_timings(out) == strip_timings(ref_dir)


def test_fzoo_steps_run_federated_and_resume_bitwise(tmp_path, fed_config, interrupt_and_resume,
                                                    strip_timings) -> None:
    base = fed_config(rounds=4)
    cfg = base.model_copy(update={"zo": base.zo.model_copy(update={"estimator": "fzoo", "q": 3,
                                                                   "distribution": "rademacher"})})
    from fedzo.federation.run import run_federated

    ref = run_federated(cfg, tmp_path / "ref")
    resumed = interrupt_and_resume(cfg, tmp_path / "cut", 3)
    assert resumed.model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "cut") == strip_timings(tmp_path / "ref")
    log = [json.loads(x) for x in (tmp_path / "ref" / "update_log.jsonl").read_text().splitlines()[1:]]
    assert all(len(line["data"]["entries"]) == 3 * 3 for line in log)  # K = 3 steps x q = 3 scalars
