"""The device fleet in federated runs: profiles per client, memory budgets, clock, deadline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fedzo.federation.client.worker as client_mod
from fedzo.config.scenario import Scenario, load_scenario
from fedzo.errors import MemoryBudgetExceeded, ScenarioError
from fedzo.federation.run import run_federated
from fedzo.records import HOST_MEASURED_KEYS

PROFILE = """\
name: {name}
memory_budget: {budget}
flops_fp32: {flops}
uplink_bps: 8.0e6
downlink_bps: 16.0e6
latency_s: 0.5
availability: {availability}
"""
HOST_KEYS = HOST_MEASURED_KEYS


@pytest.fixture
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A device catalog: fast, slow (1000x slower), flaky (bernoulli), tiny (100 MB)."""
    d = tmp_path / "catalog"
    d.mkdir()
    for name, budget, flops, avail in (
        ("fast", "8GB", 1.0e10, "{kind: always}"),
        ("slow", "8GB", 1.0e7, "{kind: always}"),
        ("flaky", "8GB", 1.0e10, "{kind: bernoulli, p: 0.5, dropout: 0.3}"),
        ("tiny", "100MB", 1.0e10, "{kind: always}"),
    ):
        (d / f"{name}.yaml").write_text(PROFILE.format(name=name, budget=budget, flops=flops,
                                                       availability=avail))
    monkeypatch.setenv("FEDZO_CLIENTS_DIR", str(d))
    client_mod.reset_worker()
    return d


def scenario(devices: list[tuple[str, int]], fed: dict[str, Any] | None = None, optimizer: str = "zo-sgd",
             **fleet: Any) -> Scenario:
    """4 clients, 2 per round, 3 rounds of K=3 on the tiny model, on the given devices."""
    base: dict[str, Any] = {"num_clients": sum(n for _, n in devices), "clients_per_round": 2, "rounds": 3,
                                "local_steps": 3, "round_timeout": 120}
    return Scenario.model_validate({
        "model": {"name": "tiny-llama"}, "runtime": {"device": "cpu", "threads": 1},
        "data": {"task": "synthetic-sentiment", "train_examples": 128, "eval_examples": 32, "max_length": 32,
                 "batch_size": 8},
        "optimizer": {"name": optimizer, "lr": 1e-3}, "federation": {**base, **(fed or {})},
        "fleet": {"devices": [{"profile": p, "count": n} for p, n in devices], **fleet},
    })


def records(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if kind is None or r["kind"] == kind]


def without_host(run: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in HOST_KEYS} for r in records(run)]


def test_records_carry_the_device_and_the_fleet_record(catalog, tmp_path) -> None:
    out = tmp_path / "run"
    summary = run_federated(scenario([("fast", 2), ("slow", 2)]), out)
    clients = records(out, "client")
    assert {(r["client"], r["device"]) for r in clients} <= {(0, "fast"), (1, "fast"), (2, "slow"), (3, "slow")}
    (fleet,) = records(out, "fleet")
    assert fleet["devices"]["fast"]["clients"] == [0, 1] and fleet["devices"]["slow"]["clients"] == [2, 3]
    assert fleet["excluded_clients"] == [] and summary.excluded_clients == []
    assert fleet["devices"]["fast"]["needed_bytes"] == summary.modelled_client_memory_bytes["fast"] > 0
    assert summary.peak_client_memory_bytes is None  # in-process clients share the server's process
    assert all(r["peak_memory_bytes"] > 0 for r in clients if r["status"] == "ok")  # each step's own peak


def test_simulated_times_are_hand_checkable(catalog, tmp_path) -> None:
    from fedzo.devices.dims import arch_dims
    from fedzo.devices.work import Tuning, step_work
    from fedzo.models import load_model

    out = tmp_path / "run"
    run_federated(scenario([("fast", 2), ("slow", 2)]), out)
    (fleet,) = records(out, "fleet")
    assert fleet["clock"] == "flops-estimate" and fleet["calibration_sha256"] is None
    d = arch_dims(load_model("tiny-llama").model.config)
    for r in records(out, "client"):
        assert r["status"] == "ok"
        flops = 1.0e10 if r["device"] == "fast" else 1.0e7
        down = r["bytes_down"] * 8 / 16.0e6 + 0.5
        assert len(r["batches"]) == 3 and all(rows == 8 and 0 < width <= 32 for rows, width in r["batches"])
        work = step_work(d, [tuple(b) for b in r["batches"]], Tuning("zo"), fleet["trainable_params"])
        compute = (work.flops + 20.0 * work.regen_elements) / flops  # K steps of 2 forwards + 3 regenerations
        replay = r["catch_up_entries"] * fleet["trainable_params"] * 20.0 / flops
        up = r["bytes_up"] * 8 / 8.0e6 + 0.5
        assert r["sim_download_end"] - r["sim_start"] == pytest.approx(down)
        assert r["sim_replay_end"] - r["sim_download_end"] == pytest.approx(replay)
        assert r["sim_compute_end"] - r["sim_replay_end"] == pytest.approx(compute)
        assert r["sim_end"] - r["sim_compute_end"] == pytest.approx(up)
    for rnd in records(out, "round")[1:]:
        mine = [c for c in records(out, "client") if c["round"] == rnd["round"]]
        assert rnd["round_sim_seconds"] == pytest.approx(max(c["sim_end"] for c in mine) - mine[0]["sim_start"])


def test_refuse_names_device_model_bytes_and_what_fits(catalog, tmp_path) -> None:
    with pytest.raises(MemoryBudgetExceeded) as err:
        run_federated(scenario([("fast", 3), ("tiny", 1)]), tmp_path / "run")
    msg = str(err.value)
    assert "memory_policy: refuse" in msg and "on tiny" in msg and "tiny-llama" in msg
    assert "100 MB (100000000 B) available" in msg and "needs" in msg
    assert "Nothing smaller fits" in msg or "What fits" in msg


def test_exclude_never_samples_and_reports(catalog, tmp_path) -> None:
    out = tmp_path / "run"
    summary = run_federated(scenario([("tiny", 1), ("fast", 3)], memory_policy="exclude"), out)
    assert summary.excluded_clients == [0]
    assert all(r["client"] != 0 for r in records(out, "client"))
    (fleet,) = records(out, "fleet")
    assert fleet["excluded_clients"] == [0] and fleet["devices"]["tiny"]["fits"] is False
    tiny = fleet["devices"]["tiny"]
    assert tiny["available_bytes"] == 100_000_000 < tiny["needed_bytes"]


def test_everyone_excluded_is_an_error(catalog, tmp_path) -> None:
    with pytest.raises(MemoryBudgetExceeded, match="every client is excluded"):
        run_federated(scenario([("tiny", 4)], memory_policy="exclude"), tmp_path / "run")


def test_deadline_drops_slow_clients(catalog, tmp_path) -> None:
    out = tmp_path / "run"
    run_federated(scenario([("fast", 2), ("slow", 2)], fed={"clients_per_round": 4}, deadline_seconds=10.0), out)
    for r in records(out, "client"):
        assert r["status"] == ("ok" if r["device"] == "fast" else "late")
        if r["status"] == "late":
            assert "deadline" in r["reason"] and r["bytes_up"] == 0 and r["sim_end"] - r["sim_start"] == 10.0
    rounds = records(out, "round")[1:]
    assert all(r["participants"] == 2 and r["late"] == [2, 3] for r in rounds)
    assert all(r["round_sim_seconds"] == pytest.approx(10.0) for r in rounds)


def test_over_commit_keeps_the_first_to_finish(catalog, tmp_path) -> None:
    out = tmp_path / "run"
    run_federated(scenario([("fast", 2), ("slow", 2)], over_commit=0.5), out)  # sample 3, keep 2
    clients = records(out, "client")
    for rnd in range(1, 4):
        mine = [c for c in clients if c["round"] == rnd]
        assert len(mine) == 3
        ok = [c for c in mine if c["status"] == "ok"]
        late = [c for c in mine if c["status"] == "late"]
        assert len(ok) == 2 and len(late) == 1 and "over-commit" in late[0]["reason"]
        assert max(c["sim_end"] for c in ok) <= late[0]["sim_end"]  # it would have finished last
        # a slow client is only kept when the sample holds fewer than two fast ones
        fast = [c for c in mine if c["device"] == "fast"]
        assert {c["client"] for c in fast} <= {c["client"] for c in ok}


@pytest.fixture
def flaky_run(catalog, tmp_path) -> tuple[Scenario, Path, dict[str, Any]]:
    s = scenario([("flaky", 2), ("fast", 2)], fed={"rounds": 4}, deadline_seconds=60.0)
    out = tmp_path / "flaky"
    return s, out, run_federated(s, out)


def test_fleet_run_reproduces_and_availability_is_seeded(flaky_run, tmp_path) -> None:
    s, out, ref = flaky_run
    statuses = {r["status"] for r in records(out, "client")}
    assert "offline" in statuses  # p = 0.5 over 4 rounds with this seed
    client_mod.reset_worker()
    again = run_federated(s, tmp_path / "again")
    assert again.model_sha256 == ref.model_sha256 and again.sim_seconds == ref.sim_seconds
    assert without_host(tmp_path / "again") == without_host(out)


def test_fleet_run_resumes_exactly(flaky_run, tmp_path, interrupt_and_resume) -> None:
    s, out, ref = flaky_run
    resumed = interrupt_and_resume(s, tmp_path / "cut", 3)
    assert resumed.model_sha256 == ref.model_sha256
    assert without_host(tmp_path / "cut") == without_host(out)


def test_memory_frontier_is_written_and_readable(flaky_run) -> None:
    from fedzo.reporting.rundir import load_run

    _, out, _ = flaky_run
    run = load_run(out)
    assert run.frontier is not None and run.frontier.family == "causal-lm"
    assert 8_000_000_000 in run.frontier.budgets_bytes
    names = [m.name for m in run.frontier.models]
    assert names[0] == "tiny-llama" and "smollm2-135m" in names
    assert all(m.zo_bytes < m.bp_bytes for m in run.frontier.models)
    assert run.frontier.largest_fitting(8e9, "zo") is not None
    assert {c.device for c in run.clients} <= {"flaky", "fast"}


def test_plain_config_runs_on_the_host_stand_in(tmp_path, fed_config) -> None:
    client_mod.reset_worker()
    out = tmp_path / "run"
    run_federated(fed_config(rounds=1), out)
    assert {r["device"] for r in records(out, "client")} == {"host"}
    assert (out / "memory_frontier.json").is_file()


def test_torch_generator_on_a_mixed_cpu_cuda_fleet_is_rejected(tmp_path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("federation: {num_clients: 2}\nzo: {generator: torch}\n"
                 "fleet: {devices: [{profile: laptop-cpu, count: 1}, {profile: datacenter-gpu, count: 1}]}\n")
    with pytest.raises(ScenarioError, match=r"generator: 'torch'.*datacenter-gpu.*generator: portable"):
        load_scenario(p)
    p.write_text("federation: {num_clients: 2}\nzo: {generator: torch}\n"
                 "fleet: {devices: [{profile: jetson-orin-nano-8gb, count: 1}, {profile: datacenter-gpu, count: 1}]}\n")
    fleet = load_scenario(p).fleet
    assert fleet is not None and fleet.devices[0].profile == "jetson-orin-nano-8gb"


def test_fedavg_baseline_uses_the_fleet(catalog, tmp_path) -> None:
    out = tmp_path / "fedavg"
    summary = run_federated(scenario([("fast", 2), ("slow", 2)], fed={"clients_per_round": 4, "rounds": 1},
                                     optimizer="fo-sgd", deadline_seconds=10.0), out)
    clients = records(out, "client")
    assert {(c["device"], c["status"]) for c in clients} == {("fast", "ok"), ("slow", "late")}
    assert summary.excluded_clients == [] and records(out, "fleet")
