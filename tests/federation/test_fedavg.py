"""The FedAvg backprop baseline on the round engine (Flower's own aggregation): records,
exactness, determinism, resume, faults, LoRA, and the Ray engine giving bitwise the
in-process model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from fedzo.federation.batches import epoch_batches
from fedzo.federation.client.fedavg import train_local
from fedzo.federation.client.worker import Worker
from fedzo.federation.run import run_federated
from fedzo.federation.server.protocols.fedavg import FedAvgProtocol
from fedzo.federation.server.sampling import sample_clients
from fedzo.federation.setup import ClientSetup, config_digest
from fedzo.federation.wire.bytes import ensure_task_identity
from fedzo.federation.wire.fedavg import ARRAYS_KEY, CONFIG_KEY, WEIGHT_KEY, build_train_config, params_to_arrays
from fedzo.zo import ParamSet, param_digest


def fo(fed_config, **kw):
    return fed_config(**{"optimizer": "fo-sgd", "lr": 0.05, **kw})


@pytest.fixture(scope="module")
def fedavg_run(tmp_path_factory, fed_config):
    out = tmp_path_factory.mktemp("fedavg") / "run"
    return out, run_federated(fo(fed_config), out)


def records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_records_and_bytes(fedavg_run, fed_config) -> None:
    out, summary = fedavg_run
    assert summary.method == "bp" and summary.optimizer == "fo-sgd" and summary.engine == "inprocess"
    recs = records(out)
    clients = [r for r in recs if r["kind"] == "client"]
    rounds = [r for r in recs if r["kind"] == "round"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert len(clients) == 6 and all(r["status"] == "ok" for r in clients)
    # the same participants as the seeds-and-scalars server would pick
    cfg = fo(fed_config)
    for r in (1, 2, 3):
        assert sorted(c["client"] for c in clients if c["round"] == r) == sample_clients(cfg.seed, r, 4, 2)
    # dense weights both ways: every message carries at least the float32 tensors
    numel = 87104  # the tiny model's trainable elements
    assert all(c["payload_bytes_down"] >= 4 * numel and c["payload_bytes_up"] >= 4 * numel for c in clients)
    assert all(c["bytes_down"] > c["payload_bytes_down"] for c in clients)
    setup_up, setup_down = summary.bytes_by_kind["setup"]  # the handshake: one setup message per node
    assert setup_down > 4 * 1000 and setup_up < setup_down
    assert summary.bytes_up == sum(c["bytes_up"] for c in clients) + setup_up == rounds[-1]["bytes_up_total"]
    assert summary.bytes_by_kind["train"][0] == sum(c["bytes_up"] for c in clients)
    assert all(c["sim_start"] <= c["sim_download_end"] <= c["sim_compute_end"] <= c["sim_end"] for c in clients)


def test_global_model_is_the_weighted_mean_of_client_models(tmp_path, fed_config) -> None:
    """One round recomputed by hand: clients trained from the initial model, averaged."""
    cfg = fo(fed_config, rounds=1, partition="dirichlet", partition_alpha=0.3)
    summary = run_federated(cfg, tmp_path / "one")
    worker = Worker(ClientSetup(cfg, None))
    initial = params_to_arrays(worker.work)
    ensure_task_identity()
    trained, weights = [], []
    for c in sample_clients(cfg.seed, 1, 4, 2):
        content = RecordDict({ARRAYS_KEY: initial, CONFIG_KEY: build_train_config(1, 0.05, "x")})
        reply = train_local(worker, c, content)
        trained.append({k: a.numpy() for k, a in reply.array_records[ARRAYS_KEY].items()})
        weights.append(int(reply.metric_records["metrics"][WEIGHT_KEY]))
    assert weights[0] != weights[1]  # uneven partitions: the weighting matters
    factors = [w / sum(weights) for w in weights]
    mean = {k: trained[0][k] * factors[0] + trained[1][k] * factors[1] for k in trained[0]}
    import torch

    expected = ParamSet.from_tensors({k: torch.from_numpy(np.asarray(v)) for k, v in mean.items()})
    assert param_digest(expected) == summary.model_sha256


def test_epoch_batches_cover_the_partition_once() -> None:
    part = list(range(10, 31))
    steps = epoch_batches(part, 8, 0, 1, 2, 0)
    assert [len(s) for s in steps] == [8, 8, 5] and sorted(i for s in steps for i in s) == part
    assert steps == epoch_batches(part, 8, 0, 1, 2, 0) and steps != epoch_batches(part, 8, 0, 1, 2, 1)


def test_two_runs_are_identical(fedavg_run, tmp_path, fed_config, strip_timings) -> None:
    out, ref = fedavg_run
    again = run_federated(fo(fed_config), tmp_path / "again")
    assert again.model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "again") == strip_timings(out)


def test_killed_server_resumes_bitwise(fedavg_run, tmp_path, monkeypatch, fed_config, strip_timings) -> None:
    out, ref = fedavg_run
    real = FedAvgProtocol.checkpoint

    def crash_after_round_2(self, round_):
        real(self, round_)
        if round_ == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(FedAvgProtocol, "checkpoint", crash_after_round_2)
    with pytest.raises(KeyboardInterrupt):
        run_federated(fo(fed_config), tmp_path / "cut")
    monkeypatch.setattr(FedAvgProtocol, "checkpoint", real)
    resumed = run_federated(fo(fed_config), tmp_path / "cut", resume=True)
    assert resumed.model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "cut") == strip_timings(out)


def test_failing_and_malformed_clients_are_counted(tmp_path, monkeypatch, fed_config) -> None:
    import fedzo.federation.client.fedavg as fc

    real = fc.train_local

    def flaky(worker, client, content):
        if client == 1:
            raise RuntimeError("device on fire")
        reply = real(worker, client, content)
        if client == 0:  # a NaN in the weights
            arr = reply.array_records[ARRAYS_KEY]
            name = min(arr)
            bad = arr[name].numpy().copy()
            bad.flat[0] = np.nan
            from flwr.app import Array

            arr[name] = Array(bad)
        return reply

    monkeypatch.setattr(fc, "train_local", flaky)
    summary = run_federated(fo(fed_config, num_clients=2, min_clients=1), tmp_path / "f")
    recs = records(tmp_path / "f")
    clients = [r for r in recs if r["kind"] == "client"]
    assert {r["status"] for r in clients} == {"failed", "excluded"}
    assert any("device on fire" in r["reason"] for r in clients)
    assert any("non-finite" in r["reason"] for r in clients)
    rounds = [r for r in recs if r["kind"] == "round" and r["round"] > 0]
    assert all("min_clients" in r["skipped"] and r["participants"] == 0 for r in rounds)
    assert summary.initial_accuracy == summary.final_accuracy  # the global model never moved


def test_lora_sends_only_the_adapters(tmp_path, fed_config) -> None:
    full = run_federated(fo(fed_config, rounds=1, optimizer="fo-adam", lr=1e-3), tmp_path / "full")
    cfg = fo(fed_config, rounds=1, optimizer="fo-adam", lr=1e-3)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"peft": "lora"})})
    lora = run_federated(cfg, tmp_path / "lora")
    assert lora.bytes_up * 5 < full.bytes_up
    recs = [r for r in records(tmp_path / "lora") if r["kind"] == "client"]
    assert all(r["status"] == "ok" for r in recs)


def test_handle_dispatches_fedavg_messages(fed_config) -> None:
    """A FedAvg message before the handshake is refused with a named error."""
    from fedzo.federation.client.worker import CatchUpError, handle

    ensure_task_identity()
    ctx = Context(run_id=1, node_id=5, node_config={"partition-id": 0}, state=RecordDict(), run_config={})
    digest = config_digest(ClientSetup(fo(fed_config), None).to_json())
    content = RecordDict({CONFIG_KEY: build_train_config(1, 0.1, digest)})
    with pytest.raises(CatchUpError, match="before setup"):
        handle(content, ctx)


# About 100 s on 2 cores (Ray start-up and actors loading the model): opt-in. The default run
# covers Ray with the seeds-and-scalars protocol (tests/federation/test_simulation.py), and
# FedAvg with the in-process, deployment and `flwr run` paths.
@pytest.mark.slow
def test_ray_simulation_equals_in_process(fedavg_run, tmp_path, fed_config) -> None:
    _, ref = fedavg_run
    sim = run_federated(fo(fed_config), tmp_path / "sim", engine="simulation")
    assert sim.model_sha256 == ref.model_sha256
    assert sum(r["kind"] == "client" and r["status"] == "ok" for r in records(tmp_path / "sim")) == 6
