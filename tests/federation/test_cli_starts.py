"""Starting runs from the command line: validate opens what run opens, a failed start leaves
nothing behind, and the small things a user meets (--version, --resume with a scenario, the
resume command on Ctrl-C, per-round lines in a log file)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

import fedzo
from fedzo.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, data: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _smoke(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "smoke-tiny.yaml").read_text())
    data["federation"]["rounds"] = 1
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[key] = value
    return data


def test_validate_refuses_what_run_refuses_a_missing_calibration_group(tmp_path: Path, capsys: Any) -> None:
    """Backprop on the tiny model has no group in the shipped calibration: validate says so
    (as run does), and its fix measures into a copy, never into the shipped file."""
    path = _write(tmp_path, _smoke(**{"optimizer.name": "fo-adam"}))
    assert main(["validate", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "model: error" in out and "about as long as a run's setup" in out
    assert "no calibration for tiny-llama bp full" in err
    assert "cp " in err and "--out my.calibration.json" in err and "--out clients/" not in err
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "no calibration for tiny-llama bp full" in capsys.readouterr().err


def test_a_failed_start_leaves_nothing_that_blocks_the_corrected_run(tmp_path: Path, capsys: Any) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n")  # a header, no rows
    path = _write(tmp_path, _smoke(**{"data.task": str(bad), "fleet.calibration": None}))
    run = tmp_path / "run"
    assert main(["run", str(path), "--out", str(run), "--no-progress"]) == 2
    assert "has a header ('text,label') but no rows" in capsys.readouterr().err
    assert not run.exists()  # nothing written that --force or --resume would be needed for
    good = _write(tmp_path, _smoke(), "good.yaml")
    assert main(["run", str(good), "--out", str(run), "--no-progress", "--no-plots"]) == 0


def test_resuming_a_run_that_never_started_says_so(tmp_path: Path, capsys: Any) -> None:
    from fedzo.config.scenario import load_scenario
    from fedzo.runs import RunDir

    good = _write(tmp_path, _smoke())
    run = tmp_path / "run"
    RunDir.create(run, {"kind": "federated", **load_scenario(good).model_dump(mode="json")})  # killed in setup
    assert main(["run", "--resume", str(run), "--no-progress", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "never started a round" in err and f"fedzo run SCENARIO --out {run} --force" in err


def test_resume_with_a_scenario_checks_it_is_the_runs_own(tmp_path: Path, capsys: Any) -> None:
    good = _write(tmp_path, _smoke())
    run = tmp_path / "run"
    assert main(["run", str(good), "--out", str(run), "--no-progress", "--no-plots"]) == 0
    other = _write(tmp_path, _smoke(seed=3), "other.yaml")
    capsys.readouterr()
    assert main(["run", str(other), "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not the scenario of" in err and "changed: seed" in err
    assert main(["run", str(good), "--resume", str(run), "--no-progress", "--no-plots"]) == 0


def test_version_and_the_resume_command_on_ctrl_c(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"fedzo {fedzo.__version__}"

    def interrupt(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("fedzo.federation.run.run_federated", interrupt)
    good = _write(tmp_path, _smoke())
    assert main(["run", str(good), "--out", str(tmp_path / "run")]) == 130
    assert f"interrupted; continue with: fedzo run --resume {tmp_path / 'run'}" in capsys.readouterr().err


def test_progress_to_a_file_is_one_line_per_round(monkeypatch: Any, capsys: Any) -> None:
    import sys

    from fedzo.federation.progress import RoundProgress
    from fedzo.records import RoundRecord

    log = io.StringIO()  # stderr, where the bar goes, is not a terminal: lines on stdout
    monkeypatch.setattr(sys, "stdout", log)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    bar = RoundProgress("x", 2, 0, mode="bar")
    bar.update([RoundRecord(round=1, participants=2, sim_seconds=1.0)])
    bar.close()
    assert log.getvalue() == "round 1/2: simulated 1.0 s, up 0 B, down 0 B\n" and "\r" not in log.getvalue()


def test_a_run_on_relative_user_data_is_rebuilt_from_another_directory(tmp_path: Path, monkeypatch: Any) -> None:
    """The stored scenario holds the data path made absolute, so evaluate --run (and
    --resume) find the data from any working directory."""
    from fedzo.federation.server.global_model import load_global_model

    work = tmp_path / "work"
    work.mkdir()
    (work / "stars.csv").write_text("text,stars\n" + "".join(f"film {i},{(1, 5)[i % 2]}\n" for i in range(90)))
    monkeypatch.chdir(work)
    path = _write(work, _smoke(**{"data.task": "stars.csv", "data.label_column": "stars", "fleet.calibration": None,
                                  "data.label_map": {1: "negative", 5: "positive"}}))
    assert main(["run", str(path), "--out", "run", "--no-progress", "--no-plots"]) == 0
    stored = yaml.safe_load((work / "run" / "scenario.yaml").read_text())
    assert stored["data"]["task"] == str(work / "stars.csv")
    monkeypatch.chdir(tmp_path)
    assert load_global_model(work / "run").matches_summary
