"""The deployment path without processes: the ServerApp's run config, the Flower app
project, and nodes that keep their synced model only in their on-disk cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

import fedzo.federation.client.worker as client_mod
from fedzo.errors import ConfigError
from fedzo.federation.catchup import CatchUp, derived_step_seeds
from fedzo.federation.client.nodecache import NodeCache
from fedzo.federation.client.worker import CatchUpError, Worker
from fedzo.federation.deploy import read_run_config
from fedzo.federation.run import run_federated, run_on_grid
from fedzo.federation.setup import ClientSetup
from fedzo.federation.transports.inprocess import InProcessGrid, InProcessTransport
from fedzo.federation.wire.messages import Downlink

REAL_GET_WORKER = client_mod.get_worker
APP = Path(__file__).resolve().parents[2] / "scripts" / "fedzo-app"


@pytest.fixture
def fresh_process_per_message(monkeypatch, tmp_path):
    """Every message gets a newly built worker, as a board's fresh client-app process does."""
    monkeypatch.setenv("FEDZO_NODE_CACHE", str(tmp_path / "cache"))
    built: list[Worker] = []

    def fresh(setup_json: str) -> Worker:
        built.append(Worker(ClientSetup.from_json(setup_json)))
        return built[-1]

    monkeypatch.setattr(client_mod, "get_worker", fresh)
    return built


@pytest.mark.parametrize("optimizer", ["zo-sgd", "fo-sgd"])
def test_nodes_without_the_log_reach_the_same_model(tmp_path, monkeypatch, fed_config,
                                                    fresh_process_per_message, optimizer) -> None:
    """4 clients, 2 per round, 3 rounds: returning clients catch up from their node cache."""
    cfg = fed_config(optimizer=optimizer, **({"lr": 0.05} if optimizer == "fo-sgd" else {}))
    deployed = run_on_grid(cfg, tmp_path / "deployed", InProcessGrid(InProcessTransport(4)))
    built = len(fresh_process_per_message)
    monkeypatch.setattr(client_mod, "get_worker", REAL_GET_WORKER)
    client_mod.reset_worker()
    reference = run_federated(cfg, tmp_path / "reference")
    assert deployed.model_sha256 == reference.model_sha256
    statuses = [json.loads(x).get("status") for x in (tmp_path / "deployed" / "metrics.jsonl").read_text().splitlines()]
    assert statuses.count("ok") == 6 and set(statuses) <= {None, "ok"}
    assert built == 4 + 3 * 2  # handshake + one fresh worker per train message
    caches = sorted(p.relative_to(tmp_path / "cache") for p in (tmp_path / "cache").rglob("*.safetensors"))
    if optimizer == "zo-sgd":
        assert caches and all(str(p).endswith("run-1/synced.safetensors") for p in caches)
    else:
        assert caches == []  # FedAvg sends the weights every round


def test_a_fresh_node_without_cache_or_log_refuses_a_partial_catch_up(fed_config) -> None:
    worker = Worker(ClientSetup(fed_config(), None))
    d = Downlink("train", 3, 0, derived_step_seeds(0, 3, 3), 1e-3, 1e-3, 1, CatchUp("replay", 1, 2, (5,), (0.1,)))
    with pytest.raises(CatchUpError, match="cache-dir"):
        worker.train(d)


def test_node_cache_round_trip_and_cleanup(tmp_path) -> None:
    import torch

    old = NodeCache(tmp_path, 0, 7)
    old.save(2, "abc", {"w": torch.ones(3)})
    new = NodeCache(tmp_path, 0, 8)
    new.save(5, "abc", {"w": torch.arange(3.0)})
    got = new.load("abc")
    assert got is not None and got.round == 5 and torch.equal(got.tensors["w"], torch.arange(3.0))
    assert new.load("other-config") is None
    new.start_run()
    assert not old.dir.exists() and new.path.exists()


def test_read_run_config(tmp_path) -> None:
    scen = tmp_path / "s.yaml"
    scen.write_text("name: x\n")
    assert read_run_config({"scenario": str(scen), "out": "", "force": True, "resume": False}) == (
        scen, None, True, False)
    with pytest.raises(ConfigError, match="scenario"):
        read_run_config({"scenario": ""})
    with pytest.raises(ConfigError, match="no such file"):
        read_run_config({"scenario": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="force"):
        read_run_config({"scenario": str(scen), "force": "yes"})


def test_flower_app_project_is_valid() -> None:
    """`flwr run scripts/fedzo-app` accepts the project and can import both components."""
    import tomllib

    from flwr.common.config import validate_config

    config = tomllib.loads((APP / "pyproject.toml").read_text())
    ok, errors, _ = validate_config(config, check_module=True, project_dir=APP)
    assert ok, errors


def test_restarted_supernodes_and_a_restarted_superlink_reach_the_fault_free_model(
        tmp_path, monkeypatch, fed_config, fresh_process_per_message) -> None:
    """Round 2: one node restarts under a new node id (an insecure SuperNode) and one under its
    old id (SuperNode authentication), both with empty state but their on-disk caches; round 3:
    the SuperLink dies, and the run resumes as a new Flower run whose nodes kept no cache for it."""
    from flwr.app import Context, RecordDict

    from fedzo.federation.server.engine import RoundEngine

    cfg = fed_config(rounds=4, catch_up="replay")
    transport = InProcessTransport(4)
    real = RoundEngine.run_round
    seen: list[str] = []

    def faulty(self, transport_: object, round_: int) -> object:
        ctx = transport.contexts
        if round_ == 2:
            by_client = {c.node_config["partition-id"]: n for n, c in ctx.items()}
            old = ctx.pop(by_client[1])  # comes back under a new node id
            ctx[9001] = Context(run_id=1, node_id=9001, node_config=dict(old.node_config), state=RecordDict(),
                                run_config={})
            same = ctx[by_client[2]]  # comes back under its old id, its state lost
            ctx[by_client[2]] = Context(run_id=1, node_id=same.node_id, node_config=dict(same.node_config),
                                        state=RecordDict(), run_config={})
        if round_ == 3:
            seen.append("superlink down")
            raise KeyboardInterrupt
        return real(self, transport_, round_)

    monkeypatch.setattr(RoundEngine, "run_round", faulty)
    with pytest.raises(KeyboardInterrupt):
        run_on_grid(cfg, tmp_path / "deployed", InProcessGrid(transport))
    monkeypatch.setattr(RoundEngine, "run_round", real)
    records = [json.loads(x) for x in (tmp_path / "deployed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records if r.get("kind") == "client" and r["round"] == 2] == ["ok", "ok"]
    assert records[-1]["bytes_by_kind"].get("setup", (0, 0))[1] > 0  # the rejoining node's setup
    resumed = run_on_grid(cfg, tmp_path / "deployed", InProcessGrid(InProcessTransport(4, run_id=2)), resume=True)
    monkeypatch.setattr(client_mod, "get_worker", REAL_GET_WORKER)
    client_mod.reset_worker()
    reference = run_federated(cfg, tmp_path / "reference")
    assert seen and resumed.model_sha256 == reference.model_sha256


def test_the_handshake_resends_the_setup_to_silent_nodes_and_skips_dead_ones(fed_config, monkeypatch,
                                                                             tmp_path) -> None:
    """A SuperLink under load can drop a setup reply (Flower 1.41 on SQLite: 'database is
    locked'), and a node that died after registering answers with an error."""
    from flwr.app import Error, Message

    from fedzo.federation.setup import ClientSetup
    from fedzo.federation.transports.base import handshake

    monkeypatch.setenv("FEDZO_NODE_CACHE", str(tmp_path / "cache"))  # nodes keep the setup on disk

    class Lossy(InProcessTransport):
        sends: ClassVar[list[int]] = []

        def node_ids(self, expected: int, timeout: float) -> list[int]:
            return [*super().node_ids(0, 0.0), 4242]  # 4242: registered, then died

        def exchange(self, messages, timeout):
            self.sends += [m.metadata.dst_node_id for m in messages]
            live = [m for m in messages if m.metadata.dst_node_id != 4242]
            dead = [Message(Error(code=5, reason="Node Unavailable"), reply_to=m) for m in messages
                    if m.metadata.dst_node_id == 4242]
            replies = super().exchange(live, timeout)
            return dead + (replies[1:] if len(self.sends) == len(messages) else replies)  # first try: one lost

    cfg = fed_config()
    transport = Lossy(4)
    setup = ClientSetup(cfg)
    hs = handshake(transport, setup.to_json(), setup.digest, 4, 30.0)
    assert sorted(hs.node_of) == [0, 1, 2, 3] and 4242 not in hs.node_of.values()
    assert len(transport.sends) == 5 + 1  # everyone once, then the silent node again (not the dead one)


@pytest.mark.parametrize(("ids", "message"), [
    ([0, 1, 1, 3], r"nodes \d+ and \d+ both announced client 1 \(node_config partition-id\)"),
    ([0, 1, 2, 9], r"partition ids outside 0..3 \(federation.num_clients 4\): node \d+: 9"),
])
def test_the_handshake_refuses_duplicate_or_out_of_range_partition_ids_at_once(fed_config, ids, message) -> None:
    import time

    from fedzo.errors import FederationError
    from fedzo.federation.transports.base import handshake

    transport = InProcessTransport(4)
    for ctx, pid in zip(sorted(transport.contexts.values(), key=lambda c: c.node_id), ids, strict=True):
        ctx.node_config["partition-id"] = pid
    setup = ClientSetup(fed_config())
    t0 = time.monotonic()
    with pytest.raises(FederationError, match=message):
        handshake(transport, setup.to_json(), setup.digest, 4, 600.0)
    assert time.monotonic() - t0 < 30  # not a wait of the setup timeout


def test_a_node_whose_app_fails_its_setup_ends_the_handshake_with_its_reason(fed_config, monkeypatch) -> None:
    import time

    from fedzo.errors import FederationError
    from fedzo.federation.transports.base import handshake

    transport = InProcessTransport(4)
    broken = max(transport.contexts)
    real = client_mod.handle

    def handle(content, ctx):
        if ctx.node_id == broken:
            raise ValueError("data.task: 'reviews.csv' is neither a known task nor an existing path")
        return real(content, ctx)

    monkeypatch.setattr(client_mod, "handle", handle)
    setup = ClientSetup(fed_config())
    t0 = time.monotonic()
    with pytest.raises(FederationError, match=r"have no node: the setup failed on 1 node\(s\) .*reviews.csv"):
        handshake(transport, setup.to_json(), setup.digest, 4, 600.0)
    assert time.monotonic() - t0 < 30
