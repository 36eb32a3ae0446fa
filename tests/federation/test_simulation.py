"""Flower's simulation engine (Ray): resources from the scenario, and bitwise the
in-process engine's model (one Ray start)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedzo.config.federation import SimulationConfig
from fedzo.config.scenario import load_scenario
from fedzo.errors import ConfigError, ScenarioError
from fedzo.federation.run import backend_config, run_federated


def test_ray_simulation_equals_in_process(tmp_path, fed_config) -> None:
    # one client at a time (max_concurrent 1): a single actor serves all four virtual clients
    sim = run_federated(fed_config(simulation={"max_concurrent": 1}), tmp_path / "sim", engine="simulation")
    ref = run_federated(fed_config(), tmp_path / "inproc", engine="inprocess")
    assert sim.model_sha256 == ref.model_sha256
    recs = [json.loads(x) for x in (tmp_path / "sim" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "client" and r["status"] == "ok" for r in recs) == 6


def test_local_ray_gets_the_cap_times_the_cpus_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert backend_config(SimulationConfig()) == {"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0},
                                                  "init_args": {"num_cpus": 2, "num_gpus": 0}}
    many = backend_config(SimulationConfig(num_cpus=0.5, max_concurrent=8, num_gpus=0.125), gpus=1)
    # eight clients share one GPU: Ray fits min(4 CPUs / 0.5, 1 GPU / 0.125) = 8 actors
    assert many == {"client_resources": {"num_cpus": 0.5, "num_gpus": 0.125},
                    "init_args": {"num_cpus": 4, "num_gpus": 1}}


def test_attaching_to_a_cluster_forces_no_local_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = backend_config(SimulationConfig(address="10.0.0.5:6379", num_gpus=0.25))
    assert cfg == {"client_resources": {"num_cpus": 1.0, "num_gpus": 0.25}, "init_args": {"address": "10.0.0.5:6379"}}
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # Ray's own variable counts as an address
    assert backend_config(SimulationConfig())["init_args"] == {"address": "auto"}


def test_gpus_asked_for_where_there_are_none_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"federation.simulation.num_gpus: 0.5 .* no CUDA device"):
        backend_config(SimulationConfig(num_gpus=0.5), gpus=0)
    with pytest.raises(ConfigError, match=r"num_gpus: 2 per client is more than the 1 CUDA device\(s\).*at most 1"):
        backend_config(SimulationConfig(num_gpus=2), gpus=1)
    assert backend_config(SimulationConfig(num_gpus=0.25, max_concurrent=4), gpus=1)["client_resources"]["num_gpus"] == 0.25


def test_simulation_section_is_validated(tmp_path: Path) -> None:
    frac = tmp_path / "frac.yaml"
    frac.write_text("federation: {simulation: {num_cpus: 0.5, max_concurrent: 3}}\n")
    with pytest.raises(ScenarioError, match=r"3 x 0.5 = 1.5 is not a whole number"):
        load_scenario(frac)
    cpu = tmp_path / "cpu.yaml"
    cpu.write_text("runtime: {device: cpu}\nfederation: {simulation: {num_gpus: 0.25}}\n")
    with pytest.raises(ScenarioError, match="runtime.device is 'cpu'"):
        load_scenario(cpu)
    ok = tmp_path / "ok.yaml"
    ok.write_text("federation: {engine: simulation, simulation: {address: auto, num_cpus: 0.3, max_concurrent: 3}}\n")
    assert load_scenario(ok).federation.simulation.address == "auto"  # a cluster needs no whole local count


def test_attached_simulations_reach_the_update_log_through_an_actor(tmp_path: Path, fed_config,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fedzo.federation.logserver import ACTOR_PREFIX, log_lines
    from fedzo.federation.run import _update_log_ref, prepare_run

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, attached = fed_config(), fed_config(simulation={"address": "10.0.0.5:6379"})
    run = prepare_run(local, tmp_path / "run", resume=False, force=False)
    assert _update_log_ref(local, "simulation", run) == str(run.log_path)  # one machine: the file
    ref = _update_log_ref(attached, "simulation", run)
    assert ref.startswith(ACTOR_PREFIX) and ref != _update_log_ref(attached, "simulation", run)  # one per run
    assert _update_log_ref(attached, "inprocess", run) == str(run.log_path)
    log = tmp_path / "log.jsonl"
    log.write_text('{"header": {}}\n{"round": 1, "entries": []}\n')
    assert log_lines(str(log)) == ['{"header": {}}', '{"round": 1, "entries": []}']


def test_an_unreachable_cluster_is_refused_before_any_round(tmp_path: Path, fed_config,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"federation.simulation.address: no Ray head answers at 127.0.0.1:{port}"):
        run_federated(fed_config(simulation={"address": f"127.0.0.1:{port}"}), tmp_path / "run", engine="simulation")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"'head-node' is not a Ray cluster address; allowed: 'auto'"):
        run_federated(fed_config(simulation={"address": "head-node"}), tmp_path / "run", engine="simulation")


def test_resources_no_node_of_an_attached_cluster_has_are_refused() -> None:
    from fedzo.config.federation import SimulationConfig
    from fedzo.federation.run import unsatisfiable

    cpu_only = [{"Alive": True, "Resources": {"CPU": 4.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]
    why = unsatisfiable(SimulationConfig(num_gpus=0.25), cpu_only)
    assert why is not None and "0.25 GPU" in why and "largest: 4 CPU, 0 GPU" in why
    assert unsatisfiable(SimulationConfig(num_cpus=2), cpu_only) is None
    assert "more than" not in (unsatisfiable(SimulationConfig(num_cpus=6), cpu_only) or "") and \
        unsatisfiable(SimulationConfig(num_cpus=6), cpu_only) is not None
    assert unsatisfiable(SimulationConfig(), []) == "the cluster has no live node"
