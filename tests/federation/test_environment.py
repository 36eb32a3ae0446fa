"""Every run records what it computed on, and resuming or rebuilding it elsewhere says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fedzo import environment
from fedzo.federation.run import run_federated
from fedzo.federation.server.global_model import load_global_model
from fedzo.reporting.report import render_report
from fedzo.reporting.rundir import load_run


def _tamper(run: Path, **changes: Any) -> None:
    env = json.loads((run / environment.ENVIRONMENT).read_text())
    for key, value in changes.items():
        if key in env["packages"]:
            env["packages"][key] = value
        else:
            env[key] = value
    (run / environment.ENVIRONMENT).write_text(json.dumps(env))


def test_a_run_records_its_environment(tmp_path: Path, fed_config: Any) -> None:
    sc = fed_config(rounds=1)
    run_federated(sc, tmp_path / "run")
    env = environment.read(tmp_path / "run")
    assert env is not None
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["device"] == "cpu" and env["gpu"] is None and env["dtype"] == "fp32"
    assert env["torch_threads"] == sc.runtime.threads
    assert env["packages"]["torch"] == torch.__version__ and set(environment.PACKAGES) <= set(env["packages"])
    assert environment.differences(env, env) == []
    page = render_report([load_run(tmp_path / "run")], note=lambda _: None)
    assert "<h2>Environment</h2>" in page and env["cpu_capability"] in page and env["packages"]["transformers"] in page


def test_resume_and_rebuild_say_when_the_environment_differs(tmp_path: Path, fed_config: Any, capsys: Any) -> None:
    sc = fed_config(rounds=1)
    run = tmp_path / "run"
    first = run_federated(sc, run)
    capsys.readouterr()
    _tamper(run, torch="1.0.0", cpu_capability="NEON")
    resumed = run_federated(sc, run, resume=True)
    err = capsys.readouterr().err
    assert "resuming" in err and f"torch: 1.0.0 -> {torch.__version__}" in err and "cpu_capability: NEON ->" in err
    assert resumed.model_sha256 == first.model_sha256  # a warning, not a refusal
    gm = load_global_model(run)
    err = capsys.readouterr().err
    assert "rebuilding" in err and "torch: 1.0.0" in err and gm.matches_summary


def test_a_run_made_before_environments_were_recorded(tmp_path: Path, fed_config: Any, capsys: Any) -> None:
    sc = fed_config(rounds=1)
    run_federated(sc, tmp_path / "run")
    (tmp_path / "run" / environment.ENVIRONMENT).unlink()
    capsys.readouterr()
    load_global_model(tmp_path / "run")
    assert "records no environment" in capsys.readouterr().err
    page = render_report([load_run(tmp_path / "run")], note=lambda _: None)
    assert "not recorded" in page
