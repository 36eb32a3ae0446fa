"""A tiny federated scenario shared by the engine tests, and one loopback deployment shared
by the deployment tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedzo.config.federation import FederationConfig
from fedzo.config.scenario import Scenario
from fedzo.records import HOST_MEASURED_KEYS


def tiny_config(*, optimizer: str = "zo-sgd", lr: float = 1e-3, **fed: Any) -> Scenario:
    """4 clients, 2 per round, 3 rounds of K=3 local steps on the tiny model; ``fed`` are
    ``federation:`` keys, every client on the host stand-in."""
    unknown = set(fed) - set(FederationConfig.model_fields)
    assert not unknown, f"not federation keys: {unknown}"
    base: dict[str, Any] = {"num_clients": 4, "clients_per_round": 2, "rounds": 3, "local_steps": 3, "round_timeout": 120,
                                "seed_pool_size": 16}
    return Scenario.model_validate({
        "model": {"name": "tiny-llama"}, "runtime": {"device": "cpu", "threads": 1},
        "data": {"task": "synthetic-sentiment", "train_examples": 128, "eval_examples": 32, "batch_size": 8},
        "optimizer": {"name": optimizer, "lr": lr}, "federation": {**base, **fed}})


DEPLOY_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy_local.sh"

TIMING_KEYS = HOST_MEASURED_KEYS | {"sim_seconds", "round_sim_seconds", "sim_start", "sim_download_end",
                                    "sim_compute_end", "sim_end"}


def metrics_without_timings(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl minus the fields that measure host time or memory."""
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if k not in TIMING_KEYS})
    return out


@pytest.fixture(scope="session")
def fed_config() -> Any:
    """The tiny scenario builder."""
    return tiny_config


@pytest.fixture(scope="session")
def strip_timings() -> Any:
    """The metrics reader that drops timings."""
    return metrics_without_timings


def interrupted_then_resumed(config: Any, out: Path, crash_round: int, monkeypatch: Any) -> dict[str, Any]:
    """Run ``config`` into ``out``, interrupt it at the start of ``crash_round`` (as Ctrl-C
    would), then resume it; returns the resumed run's summary."""
    from fedzo.federation.run import run_federated
    from fedzo.killpoints import Interrupted, interrupt_at

    with pytest.raises(Interrupted), interrupt_at("round-start", crash_round):
        run_federated(config, out)
    return run_federated(config, out, resume=True)


@pytest.fixture
def interrupt_and_resume(monkeypatch: Any) -> Any:
    """``interrupt_and_resume(config, out, crash_round)`` -> the resumed summary."""
    return lambda config, out, crash_round: interrupted_then_resumed(config, out, crash_round, monkeypatch)


DEPLOY_SCENARIO = """\
version: 2
name: deploy-tiny
model: {name: tiny-llama}
data: {task: synthetic-sentiment, train_examples: 64, eval_examples: 32, batch_size: 8}
optimizer: {lr: 0.001}
runtime: {device: cpu, threads: 1}
federation:
  num_clients: 2
  rounds: 3
  local_steps: 3
  round_timeout: 300
fleet:
  default_profile: rpi5-8gb  # always available: every client-round must come back
"""
"""The deployed scenario. Three rounds, not two: only from round 3 on does a node need the
synced model it cached on disk in an earlier round (each message runs in a fresh client-app
process), so the node cache is exercised."""


@dataclass(frozen=True)
class Deployment:
    """One finished ``scripts/deploy_local.sh`` run whose SuperNodes dialled a counting proxy."""

    root: Path  # scenario file, deployed/ (the run directory) and logs/
    output: str  # the script's stdout and stderr
    seconds: float
    report: dict[str, Any]  # the proxy's byte report
    exchanges: list[Any]  # the proxy's captured HTTP exchanges

    @property
    def scenario(self) -> Path:
        """The deployed scenario file."""
        return self.root / "deploy-tiny.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def proxied_deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """A SuperLink and 2 SuperNodes on loopback (``scripts/deploy_local.sh``) running
    :data:`DEPLOY_SCENARIO`, the nodes dialling a counting TCP proxy
    (:class:`fedzo.bench.wire.WireProxy`) in front of the SuperLink. About 90 s on 2 cores,
    so the deployment tests share one (tests/federation/test_wire.py checks its bytes,
    test_deploy_integration.py its model and processes)."""
    from fedzo.bench.wire import WireProxy

    root = tmp_path_factory.mktemp("deployment")
    scenario = root / "deploy-tiny.yaml"
    scenario.write_text(DEPLOY_SCENARIO)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    link_port = _free_port()
    with WireProxy(link_port, capture=True) as proxy:
        t0 = time.monotonic()
        proc = subprocess.Popen(["bash", str(DEPLOY_SCRIPT), str(scenario), "--out", str(root / "deployed"),
                                 "--logs", str(root / "logs"), "--timeout", "400", "--port", str(link_port),
                                 "--node-superlink", f"127.0.0.1:{proxy.port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)  # the script's trap stops what it started
            output, _ = proc.communicate(timeout=30)
            pytest.fail(f"deploy_local.sh timed out:\n{output}")
        seconds = time.monotonic() - t0
        time.sleep(0.5)  # the nodes' last calls (deactivation) finish
    assert proc.returncode == 0, output
    return Deployment(root, output, seconds, proxy.report(), list(proxy.exchanges))
