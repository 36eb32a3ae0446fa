"""Scenario files: every shipped file loads; bad input gives named, complete errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedzo.cli import main
from fedzo.errors import ScenarioError
from fedzo.scenario import load_scenario, scenario_reference

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def test_scenarios_folder_is_not_empty() -> None:
    assert SCENARIOS, "scenarios/ holds no YAML files"


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_shipped_scenario_validates(path: Path) -> None:
    s = load_scenario(path)
    assert s.name


def test_reference_doc_is_current() -> None:
    doc = (ROOT / "docs" / "scenarios.md").read_text()
    assert doc == scenario_reference(), "regenerate: fedzo validate --reference > docs/scenarios.md"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(ScenarioError, match="file is empty"):
        load_scenario(_write(tmp_path, "  \n"))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "name: x\nfederation:\n  rounds: [1, 2\n  lr: 3\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml: YAML syntax error at line \d+"):
        load_scenario(p)


def test_all_problems_reported_at_once_with_paths_values_and_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, """
model: tiny-llama
learning_rate: 3
federation:
  rounds: -1
  catch_up: gossip
  lr: "fast"
fleet:
  devices:
    - {profile: laptop-cpu, count: 1}
    - {profile: rpi6, count: 1}
""")
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert "problems in" in msg
    assert f"{p}: learning_rate: unknown key" in msg
    assert "federation.rounds: -1" in msg
    assert "federation.catch_up: 'gossip'" in msg and "replay" in msg
    assert "federation.lr: 'fast'" in msg
    assert "fleet.devices[1].profile: 'rpi6': 'rpi6' is not a known profile; known:" in msg


def test_illegal_combinations(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="seed_pool.*constant lr"):
        load_scenario(_write(tmp_path, "federation: {catch_up: seed_pool, schedule: cosine}\n"))
    with pytest.raises(ScenarioError, match="add up to 3 but federation.num_clients is 10"):
        load_scenario(_write(tmp_path, "fleet: {devices: [{profile: laptop-cpu, count: 3}]}\n"))
    with pytest.raises(ScenarioError, match="zo-adam.*centralized"):
        load_scenario(_write(tmp_path, "federation: {optimizer: zo-adam}\n"))


def test_validate_command_exit_codes(tmp_path: Path, capsys) -> None:
    good = _write(tmp_path, "federation: {rounds: 2}\n")
    assert main(["validate", str(good)]) == 0
    assert ": ok (" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: {rounds: 0}\n")
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "federation.rounds: 0" in err and "Traceback" not in err


def test_resume_with_a_changed_configuration_names_the_keys(tmp_path: Path, capsys) -> None:
    import yaml

    out = tmp_path / "run"
    assert main(["run", str(ROOT / "scenarios" / "smoke-tiny.yaml"), "--out", str(out), "--no-progress",
                 "--no-plots"]) == 0
    stored = yaml.safe_load((out / "scenario.yaml").read_text())
    stored["federation"]["lr"] = 0.5  # as if the file had been edited after the run
    (out / "scenario.yaml").write_text(yaml.safe_dump(stored))
    before = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    from fedzo.errors import ConfigError
    from fedzo.federation.run import run_federated

    with pytest.raises(ConfigError, match=r"changed: federation\.lr"):
        run_federated(load_scenario(ROOT / "scenarios" / "smoke-tiny.yaml"), out, resume=True)
    assert (out / "metrics.jsonl").read_text() == before  # nothing overwritten
    assert main(["run", str(ROOT / "scenarios" / "smoke-tiny.yaml"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
