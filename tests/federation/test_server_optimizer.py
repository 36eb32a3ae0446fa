"""A stateful server optimizer federated: every way a client catches up rebuilds the
server's model and buffers bitwise (replay over the wire, full weights, the node cache, a
re-sync from the log), the scenario refuses what cannot work, and runs rebuild and resume."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fedzo.config.scenario import Scenario
from fedzo.errors import ScenarioError
from fedzo.federation.catchup import CatchUp, History
from fedzo.federation.client.nodecache import NodeCache
from fedzo.federation.client.worker import Worker
from fedzo.federation.setup import ClientSetup
from fedzo.federation.wire.messages import Downlink, build_downlink, parse_downlink
from fedzo.zo import LogEntry, UpdateLog, apply_entries

ROUNDS = 5


def _scenario(server: str = "momentum", **fed: Any) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "tiny-llama", "peft": "prompt", "virtual_tokens": 4},
        "runtime": {"device": "cpu", "threads": 1},
        "data": {"task": "synthetic-sentiment", "train_examples": 64, "eval_examples": 32, "batch_size": 8},
        "optimizer": {"name": "zo-sgd", "lr": 1e-3},
        "federation": {"num_clients": 4, "clients_per_round": 2, "rounds": 4, "local_steps": 2,
                       "server_optimizer": {"name": server}, **fed}})


def _tensors(w: Worker) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in w.clean_tensors().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wire(w: Worker, cu: CatchUp) -> Downlink:
    """A train message carrying ``cu``, serialized and parsed as a node would receive it."""
    d = Downlink("train", cu.to_round + 1, 0, (1, 2), 1e-3, 1e-3, 1, cu, config_digest=w.digest)
    return parse_downlink(build_downlink(d))


@pytest.fixture(scope="module", params=["momentum", "adam"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A server's history of ROUNDS rounds (round 3 empty), its log on disk, and its states."""
    sc = _scenario(request.param)
    server = Worker(ClientSetup(sc))  # its clean copy and server optimizer play the server
    history = History(group_rounds=True)
    history.mark_synced(0, 0)
    log_path = tmp_path_factory.mktemp("log") / "updates.jsonl"
    log = UpdateLog.create({}, log_path)
    rng = np.random.default_rng(11)
    states = {0: _tensors(server)}
    for r in range(1, ROUNDS + 1):
        entries = [] if r == 3 else [LogEntry(r, int(rng.integers(0, 2**62)), (float(rng.normal() * 0.05),))
                                     for _ in range(4)]
        server.server_opt.apply_round(entries)
        history.record(r, [(e.seed, e.coefficient) for e in entries])
        log.append_round(r, entries)
        states[r] = _tensors(server)
    return {"scenario": sc, "history": history, "log": str(log_path), "states": states}


def test_replay_over_the_wire_rebuilds_model_and_buffers(served: dict[str, Any]) -> None:
    client = Worker(ClientSetup(served["scenario"]))
    cu = served["history"].replay(0, ROUNDS)
    assert cu.round_sizes == (4, 4, 0, 4, 4)
    d = _wire(client, cu)
    assert d.catch_up.round_sizes == cu.round_sizes
    assert client.catch_up(d) == "replay" and client.round == ROUNDS
    assert _same(_tensors(client), served["states"][ROUNDS])
    # the same pairs applied as one sequence (a stateless server's replay) land elsewhere
    flat = Worker(ClientSetup(served["scenario"]))
    apply_entries(flat.clean_perturber, cu.entries())
    assert not _same(_tensors(flat), served["states"][ROUNDS])


def test_full_weights_carry_the_buffers_and_the_node_cache_keeps_them(served: dict[str, Any], tmp_path) -> None:
    sc, states, history = served["scenario"], served["states"], served["history"]
    weights = {k: v.numpy() for k, v in states[2].items()}
    assert any(k.startswith("server-opt/") for k in weights)
    first = Worker(ClientSetup(sc))
    cache = NodeCache(tmp_path, 0, 1)
    assert first.catch_up(_wire(first, CatchUp("full", 0, 2, weights=weights)), cache) == "full"
    assert _same(_tensors(first), states[2])
    later = Worker(ClientSetup(sc))  # a fresh process on the same board: starts from its cache
    assert later.catch_up(_wire(later, history.replay(2, ROUNDS)), cache) == "replay"
    assert _same(_tensors(later), states[ROUNDS])
    assert NodeCache(tmp_path, 0, 1).load(later.digest).round == ROUNDS


def test_a_worker_behind_resyncs_from_the_log(served: dict[str, Any]) -> None:
    worker = Worker(ClientSetup(served["scenario"], resync_log=served["log"]))
    # the message catches up from round 1, but this worker holds round 0: it re-syncs from the log
    assert worker.catch_up(_wire(worker, served["history"].replay(1, ROUNDS))) == "log"
    assert _same(_tensors(worker), served["states"][ROUNDS])


@pytest.mark.parametrize("change,message", [
    ({"model": {"name": "tiny-llama", "peft": "full"}}, "model.peft 'full' trains every weight"),
    ({"federation": {"catch_up": "seed_pool", "server_optimizer": {"name": "adam"}}}, "catch_up 'seed_pool'"),
    ({"optimizer": {"name": "fo-sgd"}}, "runs the FedAvg baseline"),
    ({"federation": {"server_optimizer": {"name": "nesterov"}}}, "allowed: none, momentum, adam"),
    ({"federation": {"server_optimizer": {"name": "adam", "beta2": 1.0}}}, "beta2"),
])
def test_scenarios_that_cannot_work_are_refused(tmp_path, change: dict[str, Any], message: str) -> None:
    import yaml

    from fedzo.config.scenario import load_scenario

    data = _scenario().model_dump(mode="json", exclude_none=True)
    for section, value in change.items():
        data[section] = {**data[section], **value}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=message) as err:
        load_scenario(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("server", ["momentum", "adam"])
def test_federated_runs_rebuild_and_resume_bitwise(tmp_path, server: str, interrupt_and_resume) -> None:
    from fedzo.federation.run import run_federated
    from fedzo.federation.server.global_model import load_global_model

    sc = _scenario(server, catch_up="auto")
    whole = run_federated(sc, tmp_path / "whole")
    assert load_global_model(tmp_path / "whole").matches_summary is True
    resumed = interrupt_and_resume(sc, tmp_path / "resumed", 3)
    assert resumed.model_sha256 == whole.model_sha256
    plain = run_federated(_scenario("none", catch_up="auto"), tmp_path / "plain")
    assert plain.model_sha256 != whole.model_sha256


def test_memory_model_and_clock_count_the_clients_buffers() -> None:
    from fedzo.devices.architectures import model_config
    from fedzo.devices.dims import arch_dims
    from fedzo.devices.memory import estimate_memory, trainable_parameters
    from fedzo.federation.fleet import tuning_of

    assert [tuning_of(_scenario(s)).server_state_copies for s in ("none", "momentum", "adam")] == [0, 1, 2]
    config = model_config("smollm2-135m")
    kw = {"batch": 8, "seq": 64, "peft": "lora"}
    plain, adam = (estimate_memory(config, "zo", **kw, server_state=n) for n in (0, 2))
    lora = trainable_parameters(arch_dims(config), "lora", lora_rank=8)[0]
    assert adam.optimizer_states - plain.optimizer_states == 2 * lora * 4  # two fp32 copies of the LoRA set
    assert adam.total - plain.total == 2 * lora * 4
