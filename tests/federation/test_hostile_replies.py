"""Crafted replies through the round engine: a reply claiming a huge example count, or
scalars scaled far beyond the run's own scale, is rejected and counted by its reason; the
round aggregates the honest replies alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedzo.federation.client.worker import LocalSteps
from fedzo.federation.run import run_federated


def _client_records(run: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "client"]


@pytest.mark.parametrize(("tamper", "code"), [
    ({"num_examples": 10**9}, "example-count"),
    ({"scale": 1e5}, "beyond-scale"),
])
def test_a_crafted_reply_is_rejected_and_the_round_stays_honest(tmp_path: Path, fed_config: Any, monkeypatch: Any,
                                                                 tamper: dict[str, Any], code: str) -> None:
    sc = fed_config(num_clients=4, clients_per_round=4, rounds=2)
    honest = run_federated(sc, tmp_path / "honest")
    real = LocalSteps.uplink

    def crafted(self: LocalSteps, d: Any, *args: Any, **kwargs: Any) -> Any:
        up = real(self, d, *args, **kwargs)
        if d.client != 1:
            return up
        if "scale" in tamper:
            return type(up)(**{**up.__dict__, "scalars": tuple(x * tamper["scale"] for x in up.scalars)})
        return type(up)(**{**up.__dict__, **tamper})

    monkeypatch.setattr(LocalSteps, "uplink", crafted)
    attacked = run_federated(sc, tmp_path / "attacked")
    recs = _client_records(tmp_path / "attacked")
    bad = [r for r in recs if r["client"] == 1 and r["round"] > 0]
    assert bad and all(r["status"] == "excluded" for r in bad), bad
    assert all(("examples" if code == "example-count" else "times the run's scale") in r["reason"] for r in bad)
    rounds = [json.loads(x) for x in (tmp_path / "attacked" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["rejected"] == {"1": code} for r in rounds if r["kind"] == "round" and r["round"] > 0)
    assert attacked.model_sha256 != honest.model_sha256  # client 1's honest scalars are missing, nothing more
    assert attacked.final_accuracy is not None


def test_a_node_flower_reports_unavailable_is_that_clients_failure(tmp_path: Path, fed_config: Any) -> None:
    """Flower answers for a dead node from the SuperLink's own node id ("node unavailable");
    the reply is matched to its client by the message it answers, not counted as an unknown
    node's reply with the client dropped for a timeout."""
    from flwr.app import Error, Message

    from fedzo.federation.run import build_engine, prepare_run
    from fedzo.federation.server.engine import RoundEngine
    from fedzo.federation.transports.inprocess import InProcessTransport

    class OneDead(InProcessTransport):
        dead: int | None = None

        def exchange(self, messages: Any, timeout: float) -> list[Any]:
            replies = []
            for m in messages:
                m.metadata.__dict__["_message_id"] = m.object_id  # as a Grid sets it on push
                if m.metadata.dst_node_id == self.dead and m.metadata.group_id != "0":
                    rep = Message(Error(code=5, reason="Node Unavailable"), reply_to=m)
                    rep.metadata.__dict__["_src_node_id"] = 1  # the SuperLink's node id
                    replies.append(rep)
                else:
                    replies += super().exchange([m], timeout)
            return replies

    sc = fed_config(num_clients=4, clients_per_round=4, rounds=2)
    transport = OneDead(4)
    transport.dead = min(transport.contexts)
    run = prepare_run(sc, tmp_path / "run", resume=False, force=False)
    eng: RoundEngine[Any] = build_engine(sc, run, engine="inprocess", resume=False, resync_log=str(run.log_path))
    eng.run_all(transport)
    recs = _client_records(tmp_path / "run")
    dead = [r for r in recs if r["round"] > 0 and r["status"] != "ok"]
    assert dead and all(r["status"] == "failed" and "Node Unavailable" in r["reason"] for r in dead), dead
    rounds = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(not r.get("unknown_replies") for r in rounds if r["kind"] == "round")
