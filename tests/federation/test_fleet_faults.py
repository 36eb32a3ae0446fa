"""A real fleet under faults: a flower-superlink (with its state database) and 16
flower-supernodes on loopback run a tiny scenario while SuperNodes and the SuperLink are
SIGKILLed and restarted; the run resumes and ends with the fault-free model hash.

The faults land where the protocol promises the fault-free model:

* after round 1, the SuperNodes of two clients not sampled in rounds 2-3 are killed and
  restarted (insecure mode: they register again under new node ids; the server sets them
  up before the next round, and their on-disk node caches hold their synced models);
* during round 4, the SuperLink is killed (its ServerApp dies with it) and restarted on the
  same port and database; the SuperNodes reconnect on their own and keep their node ids;
  ``flwr run`` with ``resume=true`` continues the run directory as a new Flower run, which
  redoes round 4 from the update log and catches every client up from the initial model.

Several minutes on 2 CPU cores (every message starts a client-app process): marked
``slow`` and ``deploy`` (``pytest -m slow tests/federation/test_fleet_faults.py``).
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
from typing import Any

import pytest
from processes import pid_alive

from fedzo.config.scenario import load_scenario
from fedzo.federation.run import run_federated
from fedzo.federation.server.sampling import sample_clients

APP = Path(__file__).resolve().parents[2] / "scripts" / "fedzo-app"
NODES = 16
SCENARIO = f"""\
version: 2
name: fleet-faults
model: {{name: tiny-llama}}
data: {{task: synthetic-sentiment, train_examples: 256, eval_examples: 32, batch_size: 8}}
optimizer: {{lr: 0.001}}
runtime: {{device: cpu, threads: 1}}
federation:
  num_clients: {NODES}
  clients_per_round: 4
  rounds: 6
  local_steps: 2
  round_timeout: 300
  setup_timeout: 900  # a silent node is sent the setup again after 225 s
  catch_up: replay
fleet:
  default_profile: rpi5-8gb  # always available: every client-round must come back
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """The processes of a loopback deployment, each in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True)
        self.port = _free_port()
        self.env = {**os.environ, "FLWR_HOME": str(root / "flwr-home"), "FLWR_TELEMETRY_ENABLED": "0",
                    "FLWR_DISABLE_UPDATE_CHECK": "1",
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        home = root / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(f'[superlink]\ndefault = "fleet"\n\n[superlink.fleet]\n'
                                          f'address = "127.0.0.1:{self.port}"\ninsecure = true\n')
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0

    def start(self, name: str, *cmd: str) -> None:
        self.starts += 1
        log = open(self.logs / f"{name}-{self.starts}.log", "wb")  # noqa: SIM115 - kept open by the process
        self.procs[name] = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)

    def kill(self, name: str) -> None:
        """SIGKILL a process's group, then reap it (a zombie would look alive to its children)."""
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def superlink(self) -> None:
        self.start("superlink", "flower-superlink", "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
                   "--database", str(self.root / "state.db"), "--disable-runtime-dependency-installation")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise AssertionError("the SuperLink did not open its port")

    def supernode(self, i: int) -> None:
        self.start(f"node-{i}", "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                   "--port", str(_free_port()), "--node-config",
                   f'partition-id={i} num-partitions={NODES} cache-dir="{self.root / "node-cache"}"')

    def flwr(self, *args: str) -> dict[str, Any]:
        out = subprocess.run(["flwr", *args, "--format", "json"], capture_output=True, text=True, env=self.env,
                             timeout=120, check=False)
        try:
            return dict(json.loads(out.stdout))
        except ValueError:
            return {"error": out.stdout + out.stderr}

    def submit(self, scenario: Path, out: Path, resume: bool) -> int:
        cfg = f'scenario="{scenario}" out="{out}" force={"false" if resume else "true"} resume={str(resume).lower()}'
        answer = self.flwr("run", str(APP), "fleet", "--run-config", cfg)
        assert "run-id" in answer, answer
        return int(answer["run-id"])

    def status(self, run_id: int) -> str:
        runs = self.flwr("ls", "fleet", "--run-id", str(run_id)).get("runs", [])
        return str(runs[0]["status"]) if runs else "unknown"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(proc.pid, signal.SIGKILL)


def _rounds_done(out: Path) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    rounds = [json.loads(x)["round"] for x in path.read_text().splitlines() if '"kind": "round"' in x]
    return max(rounds, default=0)


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.deploy
def test_sixteen_supernodes_survive_supernode_and_superlink_kills(tmp_path) -> None:
    scenario = tmp_path / "fleet-faults.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "deployed"
    fleet = Fleet(tmp_path)
    t0 = time.monotonic()
    try:
        fleet.superlink()
        for i in range(NODES):
            fleet.supernode(i)
        run_id = fleet.submit(scenario, out, resume=False)
        _wait("round 1", lambda: _rounds_done(out) >= 1, 900)
        busy = {c for r in (2, 3) for c in sample_clients(0, r, NODES, 4)}
        victims = [c for c in range(NODES) if c not in busy][:2]
        for c in victims:  # killed between their messages; restarted under new node ids
            fleet.kill(f"node-{c}")
            fleet.supernode(c)
        _wait("round 3", lambda: _rounds_done(out) >= 3, 900)
        fleet.kill("superlink")  # its ServerApp notices and exits; the SuperNodes keep retrying
        fleet.superlink()
        resumed = fleet.submit(scenario, out, resume=True)
        assert resumed != run_id
        _wait("the resumed run", lambda: fleet.status(resumed).startswith("finished"), 1200)
        assert fleet.status(resumed) == "finished:completed", fleet.status(resumed)
        seconds = time.monotonic() - t0
    finally:
        fleet.stop()
    assert not any(pid_alive(p.pid) for p in fleet.procs.values())
    deployed = json.loads((out / "summary.json").read_text())
    reference = run_federated(load_scenario(scenario), tmp_path / "reference", engine="inprocess")
    assert deployed["model_sha256"] == reference.model_sha256
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clients = [r for r in records if r.get("kind") == "client"]
    assert len(clients) == 6 * 4 and all(r["status"] == "ok" for r in clients)
    assert any(r.get("bytes_by_kind", {}).get("setup") for r in records if r.get("kind") == "round"
               and r["round"] in (2, 3))  # the restarted nodes' setup
    print(f"fleet under faults: {seconds:.0f} s; victims {victims}; hash {deployed['model_sha256'][:12]}")
