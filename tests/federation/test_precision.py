"""Half precision: a bf16 run perturbs, updates and replays in bf16, bitwise on the server."""

from __future__ import annotations

import json

import pytest
import torch

from fedzo.federation.client.worker import Worker
from fedzo.federation.run import run_federated
from fedzo.federation.setup import ClientSetup
from fedzo.zo import param_digest


def _in(dtype: str, config, peft: str = "full"):  # type: ignore[no-untyped-def]
    return config.model_copy(update={"model": config.model.model_copy(update={"dtype": dtype, "peft": peft})})


@pytest.mark.parametrize("peft", ["full", "lora"])
def test_a_bf16_run_replays_bitwise_on_the_server(tmp_path, fed_config, peft: str) -> None:
    cfg = _in("bf16", fed_config(), peft)
    out = tmp_path / "bf16"
    summary = run_federated(cfg, out)
    assert summary.dtype == "bf16" and summary.model_sha256
    fleet = next(json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"kind": "fleet"' in x)
    assert fleet["dtype"] == "bf16"
    # a client that holds nothing rebuilds the server's model from the log alone, in bf16
    worker = Worker(ClientSetup(cfg, str(out / "update_log.jsonl")))
    assert {t.dtype for t in worker.clean.tensors} == {torch.bfloat16}
    worker._resync_from_log(summary.rounds or 0)
    assert param_digest(worker.clean) == summary.model_sha256
    # and it is a different run from fp32's: the dtype reached the weights
    assert run_federated(_in("fp32", fed_config(), peft), tmp_path / "fp32").model_sha256 != summary.model_sha256


def test_the_batched_engine_runs_half_precision_one_client_at_a_time(tmp_path, fed_config) -> None:
    """A joint bf16 forward rounds the loss differences differently (measured: scalars up to
    52x apart), so the batched engine falls back, says why, and equals in-process bitwise."""
    cfg = _in("bf16", fed_config(local_steps=1, clients_per_round=3))
    ref = run_federated(cfg, tmp_path / "inprocess", engine="inprocess")
    got = run_federated(cfg, tmp_path / "batched", engine="batched")
    notes = [json.loads(x).get("batching") for x in (tmp_path / "batched" / "metrics.jsonl").read_text().splitlines()
             if '"kind": "round"' in x and '"round": 0' not in x]
    assert notes and all(n == "sequential: model.dtype bf16: a joint forward would not reproduce each client's "
                         "scalars (federation.batched.half_precision: joint shares the passes anyway)"
                         for n in notes), notes
    assert got.model_sha256 == ref.model_sha256


def test_evaluate_rebuilds_a_bf16_run_and_takes_the_scenario_dtype_names(tmp_path, fed_config, capsys) -> None:
    from fedzo.cli import main

    out = tmp_path / "bf16"
    run_federated(_in("bf16", fed_config(rounds=1)), out)
    assert main(["evaluate", "--run", str(out), "--limit", "8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["matches_summary"] is True
    accuracies = []
    for name in ("bf16", "bfloat16"):  # the scenario's name and torch's name of one dtype
        assert main(["evaluate", "--model", "tiny-llama", "--task", "synthetic-sentiment", "--limit", "8",
                     "--dtype", name, "--json"]) == 0
        accuracies.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"])
    assert accuracies[0] == accuracies[1]

