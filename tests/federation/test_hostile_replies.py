"""Crafted replies through the round engine: a reply claiming a huge example count, or
scalars scaled far beyond the run's own scale, is rejected and counted by its reason; the
round aggregates the honest replies alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedzo.federation.client import LocalSteps
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
