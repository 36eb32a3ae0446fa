"""Flower's simulation engine (Ray) gives bitwise the in-process engine's model (one Ray start)."""

from __future__ import annotations

import json

from fedzo.federation.run import run_federated


def test_ray_simulation_equals_in_process(tmp_path, fed_config) -> None:
    sim = run_federated(fed_config(), tmp_path / "sim", engine="simulation")
    ref = run_federated(fed_config(), tmp_path / "inproc", engine="inprocess")
    assert sim.model_sha256 == ref.model_sha256
    recs = [json.loads(x) for x in (tmp_path / "sim" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["kind"] == "client" and r["status"] == "ok" for r in recs) == 6
