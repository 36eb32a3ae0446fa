"""A simulation on a two-node Ray cluster (loopback), as on machines that share no files.

Each node is its own ``ray start`` with its own resources and temp dir. The driver
attaches through ``federation.simulation.address``; attached, the setup names no file:
a worker that serves a client whose model it does not hold re-syncs from the update log
that an actor on the driver's node serves (:mod:`fedzo.federation.logserver`). Without it
this run fails: two actors serve four virtual clients, so clients move between workers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedzo.federation.run import run_federated

# About a minute (two `ray start`s, a simulation, `ray stop`): outside the default run,
# `pytest -m slow tests/federation/test_ray_cluster.py`.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("ray", path=str(Path(sys.executable).parent)) is None,
                                 reason="needs Ray's command line (pip install 'flwr[simulation]')")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray(env: dict[str, str], *args: str) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    proc = subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, f"ray {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[str, list[Path]]]:
    """A head and a worker node on loopback, one CPU each, with separate temp dirs and node caches."""
    port = _free_port()
    caches = [tmp_path / "head-cache", tmp_path / "worker-cache"]  # node caches of their own
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    base.update(RAY_USAGE_STATS_ENABLED="0", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    head = dict(base, FEDZO_NODE_CACHE=str(caches[0]))
    worker = dict(base, FEDZO_NODE_CACHE=str(caches[1]))
    # Ray's socket paths must stay short: temp dirs under /tmp, not pytest's deep tmp_path
    temps = [Path(f"/tmp/fedzo-ray-{port}-{i}") for i in (0, 1)]
    try:
        _ray(head, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
             "--num-gpus", "0", "--temp-dir", str(temps[0]), "--include-dashboard", "false", "--disable-usage-stats")
        _ray(worker, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
             "--num-gpus", "0", "--temp-dir", str(temps[1]), "--disable-usage-stats")
        yield f"127.0.0.1:{port}", temps
    finally:
        _ray(base, "stop", "--force")
        for t in temps:
            shutil.rmtree(t, ignore_errors=True)


def _actors_on(temp: Path) -> set[str]:
    """Names of the actors whose workers ran on the node with this temp dir (Ray's worker logs)."""
    names = set()
    for log in temp.glob("session_*/logs/worker-*.out"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(":actor_name:"):
                names.add(line.removeprefix(":actor_name:").strip())
    return names


def test_two_node_cluster_gives_the_in_process_model(tmp_path: Path, two_nodes: tuple[str, list[Path]],
                                                      fed_config, monkeypatch: pytest.MonkeyPatch) -> None:
    address, temps = two_nodes
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sim = run_federated(fed_config(simulation={"address": address, "num_cpus": 1}), tmp_path / "sim",
                        engine="simulation")
    ref = run_federated(fed_config(), tmp_path / "inproc", engine="inprocess")
    assert sim.model_sha256 == ref.model_sha256
    head, worker = (_actors_on(t) for t in temps)
    assert "ClientAppActor" in head and "ClientAppActor" in worker, (head, worker)  # clients ran on both nodes
    assert "UpdateLogServer" in head, head  # the log is served from the driver's node
