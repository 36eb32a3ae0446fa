"""The deployment engine for real: a flower-superlink and 2 flower-supernodes on loopback
(scripts/deploy_local.sh), 3 rounds of a tiny scenario, the same model as in-process.

The deployment is conftest.py's ``proxied_deployment``, shared with test_wire.py (which
checks its bytes): its SuperNodes dial a transparent counting proxy in front of the
SuperLink. Three rounds, so the node cache is exercised (see ``DEPLOY_SCENARIO``). About
90 s on 2 CPU cores. Marked ``deploy``: part of the default run (CI included);
``-m "not deploy"`` leaves it out.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from processes import pid_alive

from fedzo.config.scenario import load_scenario
from fedzo.federation.run import run_federated


@pytest.mark.deploy
def test_superlink_and_two_supernodes_give_the_in_process_model(proxied_deployment: Any, tmp_path) -> None:
    dep = proxied_deployment
    pids = [int(p) for line in dep.output.splitlines() if line.startswith("deploy_local: pids ")
            for p in line.split()[2:]]
    assert len(pids) == 3, dep.output  # superlink + 2 supernodes, all stopped by the script
    assert not any(pid_alive(p) for p in pids)
    deployed = json.loads((dep.root / "deployed" / "summary.json").read_text())
    reference = run_federated(load_scenario(dep.scenario), tmp_path / "reference", engine="inprocess")
    assert deployed["model_sha256"] == reference.model_sha256
    records = [json.loads(x) for x in (dep.root / "deployed" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r.get("status") == "ok" for r in records) == 6
    assert list((dep.root / "logs" / "node-cache").rglob("synced.safetensors"))
    print(f"deployment run: {dep.seconds:.1f} s")
