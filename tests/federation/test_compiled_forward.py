"""runtime.forward: compiled in a federated run: the in-process engine's clients and the batched
engine's joint passes (shared mode) run compiled graphs of a few bucketed shapes, and the
scalars are the eager run's to float32 rounding of the losses."""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path
from typing import Any

import pytest

from fedzo.config.scenario import Scenario
from fedzo.federation.client import worker as client_mod
from fedzo.federation.run import run_federated

LOSS_ULPS = 8  # each loss of a scalar may round by a few ulps in a graph of another shape


def _scenario(fed_config: Any, forward: str) -> Scenario:
    data = fed_config(local_steps=1, rounds=2, clients_per_round=3).model_dump()
    data["runtime"]["forward"] = forward
    return Scenario.model_validate(data)


def _entries(run: Path) -> list[Any]:
    lines = [json.loads(x)["data"] for x in (run / "update_log.jsonl").read_text().splitlines()]
    return [e for line in lines for e in line.get("entries", [])]


def _rounds(run: Path) -> list[dict[str, Any]]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["kind"] == "round"]


# the in-process engine's clients score through Classifier.loss, as tests/tasks/test_forward.py's
# compiled classifier does: opt-in (-m slow), which keeps the default run's compilations to two
@pytest.mark.parametrize("engine", [pytest.param("inprocess", marks=pytest.mark.slow), "batched"])
def test_a_compiled_run_compiles_few_shapes_and_keeps_the_scalars(tmp_path: Path, fed_config: Any,
                                                                   engine: str) -> None:
    client_mod.reset_worker()
    gc.collect()  # compiled forwards of earlier tests' classifiers would be counted
    eager = _scenario(fed_config, "eager")
    run_federated(eager, tmp_path / "eager", engine="inprocess")
    assert all(r["compiled_shapes"] is None for r in _rounds(tmp_path / "eager"))
    run_federated(_scenario(fed_config, "compiled"), tmp_path / "compiled", engine=engine)
    rounds = _rounds(tmp_path / "compiled")
    if engine == "batched":
        assert all(str(r["batching"]).startswith("shared:") for r in rounds if r["round"] > 0)
    shapes = [r["compiled_shapes"] for r in rounds if r["round"] > 0]
    # the server's evaluation (32 examples, batches of 32) and the clients' batches of 8 rows, or the
    # joint passes of 3 x 8 rows: a handful of shapes, the same from round to round once seen
    assert shapes[-1] is not None and 1 <= shapes[-1] <= 6, shapes
    a, b = _entries(tmp_path / "eager"), _entries(tmp_path / "compiled")
    assert [(e[0], e[3]) for e in a] == [(e[0], e[3]) for e in b]  # seeds and learning rates
    losses = [r["train_loss"] for r in _rounds(tmp_path / "eager") if r.get("train_loss") is not None]
    ulp = 2.0 ** (math.floor(math.log2(max(losses))) - 23)
    bound = LOSS_ULPS * ulp / eager.zo.eps
    for x, y in zip(a, b, strict=True):
        assert x[2] == pytest.approx(y[2], rel=1e-4, abs=bound)
    client_mod.reset_worker()
