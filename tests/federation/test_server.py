"""End to end on the in-process engine: exactness, catch-up, determinism, resume, faults."""

from __future__ import annotations

import json

import pytest

import fedzo.federation.client.worker as client_mod
from fedzo.federation.catchup import CatchUp, derived_step_seeds
from fedzo.federation.client.worker import Worker
from fedzo.federation.run import run_federated
from fedzo.federation.setup import ClientSetup
from fedzo.federation.wire.messages import Downlink
from fedzo.zo import UpdateLog, param_digest


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory, fed_config):
    out = tmp_path_factory.mktemp("fed") / "replay"
    return out, run_federated(fed_config(), out)


def test_summary_and_records(replay_run) -> None:
    out, summary = replay_run
    assert summary.method == "zo-federated" and summary.engine == "inprocess" and summary.rounds == 3
    assert summary.model == "tiny-llama" and summary.optimizer == "zo-sgd" and summary.model_sha256
    assert summary.bytes_up > 0 and summary.bytes_down > 0 and summary.final_accuracy is not None
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clients = [r for r in recs if r["kind"] == "client"]
    assert len(clients) == 3 * 2 and all(r["status"] == "ok" for r in clients)
    assert all(r["sim_start"] <= r["sim_download_end"] <= r["sim_compute_end"] <= r["sim_end"] for r in clients)
    assert all(r["payload_bytes_up"] <= 200 for r in clients)  # K=3
    log, report = UpdateLog.load(out / "update_log.jsonl")
    assert report.bad_line is None and log.last_round == 3 and len(log.entries()) == 9


def test_a_client_resynced_from_the_log_equals_the_server_model(replay_run, fed_config) -> None:
    out, summary = replay_run
    cfg = fed_config()
    worker = Worker(ClientSetup(cfg, str(out / "update_log.jsonl")))
    worker._resync_from_log(3)
    assert param_digest(worker.clean) == summary.model_sha256
    # a client that missed every round catches up from the replay payload alone
    log, _ = UpdateLog.load(out / "update_log.jsonl")
    worker._reset_clean()
    entries = log.entries()
    d = Downlink("train", 4, 0, (1,), 1e-3, 1e-3, 1,
                 CatchUp("replay", 0, 3, tuple(e.seed for e in entries), tuple(e.coefficient for e in entries)))
    assert worker.catch_up(d) == "replay"
    assert param_digest(worker.clean) == summary.model_sha256


def test_nothing_leaks_between_virtual_clients_on_one_worker(replay_run, fed_config) -> None:
    out, _ = replay_run
    setup = ClientSetup(fed_config(), str(out / "update_log.jsonl"))
    shared, fresh = Worker(setup), Worker(setup)
    seeds = derived_step_seeds(0, 2, 3)

    def down(client: int) -> Downlink:
        return Downlink("train", 2, client, seeds, 1e-3, 1e-3, 1, CatchUp("none", 1, 1))

    shared.train(down(0))
    assert shared.train(down(1)).scalars == fresh.train(down(1)).scalars


@pytest.mark.parametrize("policy", ["full", "auto"])
def test_catch_up_policies_give_the_same_model(replay_run, tmp_path, policy, fed_config) -> None:
    _, ref = replay_run
    assert run_federated(fed_config(catch_up=policy), tmp_path / policy).model_sha256 == ref.model_sha256


def test_seed_pool_run_resyncs_exactly(tmp_path, fed_config) -> None:
    cfg = fed_config(catch_up="seed_pool")
    summary = run_federated(cfg, tmp_path / "pool")
    worker = Worker(ClientSetup(cfg, str(tmp_path / "pool" / "update_log.jsonl")))
    worker._resync_from_log(3)
    assert param_digest(worker.clean) == summary.model_sha256


def test_two_runs_are_identical(replay_run, tmp_path, fed_config, strip_timings) -> None:
    out, ref = replay_run
    client_mod.reset_worker()
    again = run_federated(fed_config(), tmp_path / "again")
    assert again.model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "again") == strip_timings(out)


def test_killed_server_resumes_bitwise(replay_run, tmp_path, interrupt_and_resume, fed_config, strip_timings) -> None:
    out, ref = replay_run
    resumed = interrupt_and_resume(fed_config(), tmp_path / "cut", 3)
    assert resumed.model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "cut") == strip_timings(out)


def test_failing_clients_are_counted_and_min_clients_skips(tmp_path, monkeypatch, fed_config) -> None:
    real = Worker.train

    def flaky(self, d, *args, **kwargs):
        if d.client == 1:
            raise RuntimeError("device on fire")
        return real(self, d, *args, **kwargs)

    monkeypatch.setattr(Worker, "train", flaky)
    run_federated(fed_config(num_clients=2, min_clients=2), tmp_path / "f")
    recs = [json.loads(x) for x in (tmp_path / "f" / "metrics.jsonl").read_text().splitlines()]
    failed = [r for r in recs if r["kind"] == "client" and r["status"] == "failed"]
    assert len(failed) == 3 and "device on fire" in failed[0]["reason"]
    rounds = [r for r in recs if r["kind"] == "round" and r["round"] > 0]
    assert all("min_clients" in r["skipped"] for r in rounds)
    log, _ = UpdateLog.load(tmp_path / "f" / "update_log.jsonl")
    assert log.last_round == 3 and log.entries() == []


def test_every_message_is_counted_by_kind(replay_run) -> None:
    out, summary = replay_run
    kinds = summary.bytes_by_kind
    assert {"setup", "train", "catch_up"} <= set(kinds)
    assert sum(u for u, _ in kinds.values()) == summary.bytes_up
    assert sum(d for _, d in kinds.values()) == summary.bytes_down
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    clients = [r for r in recs if r["kind"] == "client"]
    entries = sum(c["catch_up_entries"] for c in clients)
    assert kinds["catch_up"][1] == sum(c["catch_up_bytes_down"] for c in clients) >= 16 * entries > 0
    assert kinds["setup"][1] > 4 * 1000  # the run configuration, once per node
    (first,) = [r for r in recs if r["kind"] == "round" and r["round"] == 0]
    assert first["bytes_by_kind"] == {"setup": list(kinds["setup"])}  # the handshake, before round 1
