"""Scenario files: every shipped file loads; bad input gives named, complete errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedzo.cli import main
from fedzo.config.reference import scenario_reference
from fedzo.config.scenario import load_scenario
from fedzo.errors import ScenarioError

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
    p = _write(tmp_path, "name: x\nfederation:\n  rounds: [1, 2\n  min_clients: 3\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml: YAML syntax error at line \d+"):
        load_scenario(p)


def test_all_problems_reported_at_once_with_paths_values_and_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, """
version: 2
model: {name: tiny-llama, peft: adapters}
learning_rate: 3
optimizer: {lr: "fast", name: zo-rmsprop}
federation:
  rounds: -1
  catch_up: gossip
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
    assert "model.peft: 'adapters'" in msg and "(allowed: full, lora, prefix, prompt)" in msg
    assert "federation.rounds: -1" in msg
    assert "federation.catch_up: 'gossip': is not a known catch-up policy; allowed: replay, seed_pool" in msg
    assert "optimizer.lr: 'fast'" in msg
    assert "optimizer.name: 'zo-rmsprop': is not a known optimizer; allowed: zo-sgd" in msg
    assert "fleet.devices[1].profile: 'rpi6': 'rpi6' is not a known profile; known:" in msg


def test_version_1_files_are_upgraded_with_their_old_defaults(tmp_path: Path) -> None:
    p = _write(tmp_path, """
task: rotten-tomatoes
peft: prompt
threads: 2
federation: {rounds: 3, lr: 0.01, eps: 0.1, batch_size: 4, seed: 5, optimizer: zo-sgd-sign, catch_up: full}
""")
    s = load_scenario(p)
    assert (s.model.name, s.model.peft, s.data.task, s.runtime.threads) == ("tiny-llama", "prompt",
                                                                              "rotten-tomatoes", 2)
    assert (s.optimizer.name, s.optimizer.lr, s.zo.eps, s.data.batch_size, s.seed) == ("zo-sgd-sign", 0.01,
                                                                                      0.1, 4, 5)
    assert s.runtime.device == "cpu" and s.fleet is not None and s.fleet.default_profile == "laptop-cpu"
    assert (s.federation.rounds, s.federation.catch_up) == (3, "full")
    with pytest.raises(ScenarioError, match="federation.lrr: unknown key"):
        load_scenario(_write(tmp_path, "model: tiny-llama\nfederation: {lrr: 1}\n"))


def test_upgrade_prints_the_version_2_file(tmp_path: Path, capsys) -> None:
    import yaml

    p = _write(tmp_path, "model: tiny-llama\nfederation: {rounds: 2, lr: 0.5}\n")
    assert main(["validate", "--upgrade", str(p)]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["version"] == 2 and data["optimizer"] == {"lr": 0.5} and data["model"] == {"name": "tiny-llama"}
    again = _write(tmp_path, yaml.safe_dump(data))
    assert load_scenario(again) == load_scenario(p).model_copy(update={"name": "s"})


def test_every_committed_run_directory_configuration_loads() -> None:
    import yaml

    from fedzo.config.scenario import scenario_from_dict
    from fedzo.config.train import train_config_from_dict

    stored = sorted((ROOT / "analysis" / "results").rglob("scenario.yaml"))
    assert stored
    for path in stored:
        data = yaml.safe_load(path.read_text())
        kind = data.pop("kind")
        if kind == "federated":
            scenario_from_dict(data, str(path), kind="run")
        else:
            train_config_from_dict(data, str(path))


def test_illegal_combinations(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="seed_pool.*constant lr"):
        load_scenario(_write(tmp_path, "federation: {catch_up: seed_pool}\noptimizer: {schedule: cosine}\n"))
    with pytest.raises(ScenarioError, match="add up to 3 but federation.num_clients is 10"):
        load_scenario(_write(tmp_path, "fleet: {devices: [{profile: laptop-cpu, count: 3}]}\n"))
    with pytest.raises(ScenarioError, match="'zo-adam' cannot run federated.*allowed: zo-sgd, zo-sgd-sign, fo-sgd"):
        load_scenario(_write(tmp_path, "optimizer: {name: zo-adam}\n"))
    with pytest.raises(ScenarioError, match="zo.blockwise: is for centralized runs only"):
        load_scenario(_write(tmp_path, "zo: {blockwise: true}\n"))
    assert load_scenario(_write(tmp_path, "zo: {mask: random}\n")).zo.mask == "random"  # masks run federated


def test_combination_problems_are_reported_together(tmp_path: Path) -> None:
    p = _write(tmp_path, "optimizer: {name: zo-adam, schedule: cosine}\nzo: {q: 2, blockwise: true}\n"
                         "federation: {catch_up: seed_pool}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(p)
    msg = str(err.value)
    assert "4 problems in" in msg
    for part in ("cannot run federated", "zo.blockwise: is for centralized runs only", "constant lr",
                 "needs zo.q: 1"):
        assert part in msg


def test_validate_command_exit_codes(tmp_path: Path, capsys) -> None:
    good = _write(tmp_path, "federation: {rounds: 2}\n")
    assert main(["validate", "--quick", str(good)]) == 0
    assert ": schema ok (" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: {rounds: 0}\n")
    assert main(["validate", "--quick", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "federation.rounds: 0" in err and "Traceback" not in err


def test_resume_with_a_changed_configuration_names_the_keys(tmp_path: Path, capsys) -> None:
    import yaml

    out = tmp_path / "run"
    assert main(["run", str(ROOT / "scenarios" / "smoke-tiny.yaml"), "--out", str(out), "--no-progress",
                 "--no-plots"]) == 0
    stored = yaml.safe_load((out / "scenario.yaml").read_text())
    stored["optimizer"]["lr"] = 0.5  # as if the file had been edited after the run
    (out / "scenario.yaml").write_text(yaml.safe_dump(stored))
    before = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    from fedzo.errors import ConfigError
    from fedzo.federation.run import run_federated

    with pytest.raises(ConfigError, match=r"changed: optimizer\.lr"):
        run_federated(load_scenario(ROOT / "scenarios" / "smoke-tiny.yaml"), out, resume=True)
    assert (out / "metrics.jsonl").read_text() == before  # nothing overwritten
    assert main(["run", str(ROOT / "scenarios" / "smoke-tiny.yaml"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
