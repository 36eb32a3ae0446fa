"""fedzo as a standard Flower App: `flwr run scripts/fedzo-app` on Flower's simulation
runtime (a ``flower-superlink --simulation`` on loopback, virtual SuperNodes in Ray)
gives the in-process engine's model, bitwise.

The scenario samples 2 of 4 clients per round over 3 rounds with availability traces, so
one simulation process serves several virtual nodes at different rounds and a node that
never trained catches up from the initial model (the case a shared process once got
wrong). About 60 s on 2 CPU cores. Marked ``deploy``: part of the default run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedzo.config.scenario import load_scenario
from fedzo.federation.run import run_federated

APP = Path(__file__).resolve().parents[2] / "scripts" / "fedzo-app"

SCENARIO = """\
version: 2
name: flwr-run-tiny
model: {name: tiny-llama}
data: {task: synthetic-sentiment, train_examples: 128, eval_examples: 32, batch_size: 8}
optimizer: {lr: 0.001}
runtime: {device: cpu, threads: 1}
federation: {num_clients: 4, clients_per_round: 2, rounds: 3, local_steps: 3, round_timeout: 300}
fleet:
  devices:
  - {profile: laptop-cpu, count: 2}
  - {profile: rpi5-8gb, count: 2}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.deploy
def test_flwr_run_on_the_simulation_runtime_gives_the_in_process_model(tmp_path: Path) -> None:
    scenario = tmp_path / "flwr-run-tiny.yaml"
    scenario.write_text(SCENARIO)
    port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\n'
                                      f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_HOME": str(home),
           "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FEDZO_NODE_CACHE": str(tmp_path / "node-cache")}
    link_log = (tmp_path / "superlink.log").open("w")
    link = subprocess.Popen([f"{bindir}/flower-superlink", "--simulation", "--insecure", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=link_log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    out = tmp_path / "run"
    try:
        submitted = None
        for _ in range(30):  # the SuperLink takes a few seconds to listen
            time.sleep(2)
            proc = subprocess.run([f"{bindir}/flwr", "run", str(APP), "sim", "--run-config",
                                   f'scenario="{scenario}" out="{out}"', "--federation-config", "num-supernodes=4",
                                   "--format", "json"], capture_output=True, text=True, env=env, timeout=120,
                                  check=False)
            if proc.returncode == 0 and json.loads(proc.stdout).get("success"):
                submitted = proc.stdout
                break
        assert submitted, f"flwr run never got through: {proc.stdout}{proc.stderr}"
        deadline = time.monotonic() + 300
        while not (out / "summary.json").exists() and time.monotonic() < deadline:
            time.sleep(2)
        log = (tmp_path / "superlink.log").read_text()
        assert (out / "summary.json").exists(), f"no summary after 300 s; SuperLink log:\n{log[-3000:]}"
    finally:
        os.killpg(link.pid, signal.SIGTERM)
        link.wait(timeout=60)
        link_log.close()
    flwr = json.loads((out / "summary.json").read_text())
    reference = run_federated(load_scenario(scenario), tmp_path / "reference", engine="inprocess")
    assert flwr["model_sha256"] == reference.model_sha256
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in records if r.get("status") == "failed"]
