"""The deployment engine for real: a flower-superlink and 2 flower-supernodes on loopback
(scripts/deploy_local.sh), 3 rounds of a tiny scenario, the same model as in-process.

Three rounds, not two: only from round 3 on does a node need the synced model it cached
on disk in an earlier round (each message runs in a fresh client-app process), so the
node cache is exercised. About 90 s on 2 CPU cores. Marked ``deploy``: part of the default run (CI included); ``-m "not deploy"`` leaves it out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import pid_alive

from fedzo.federation.run import run_federated
from fedzo.config.scenario import load_scenario

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy_local.sh"

SCENARIO = """\
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


@pytest.mark.deploy
def test_superlink_and_two_supernodes_give_the_in_process_model(tmp_path) -> None:
    scenario = tmp_path / "deploy-tiny.yaml"
    scenario.write_text(SCENARIO)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.Popen(["bash", str(SCRIPT), str(scenario), "--out", str(tmp_path / "deployed"),
                             "--logs", str(tmp_path / "logs"), "--timeout", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the script's trap stops what it started
        output, _ = proc.communicate(timeout=30)
        pytest.fail(f"deploy_local.sh timed out:\n{output}")
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, output
    pids = [int(p) for line in output.splitlines() if line.startswith("deploy_local: pids ")
            for p in line.split()[2:]]
    assert len(pids) == 3, output  # superlink + 2 supernodes, all stopped by the script
    assert not any(pid_alive(p) for p in pids)
    deployed = json.loads((tmp_path / "deployed" / "summary.json").read_text())
    reference = run_federated(load_scenario(scenario), tmp_path / "reference", engine="inprocess")
    assert deployed["model_sha256"] == reference.model_sha256
    records = [json.loads(x) for x in (tmp_path / "deployed" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("status") == "ok" for r in records) == 6
    assert list((tmp_path / "logs" / "node-cache").rglob("synced.safetensors"))
    print(f"deployment run: {seconds:.1f} s")
