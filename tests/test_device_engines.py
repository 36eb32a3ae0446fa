"""The engines check of the GPU script: scenarios moved to the device, skipped without its inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from fedzo.config.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("device_engines", ROOT / "scripts" / "device_engines.py")
assert spec is not None and spec.loader is not None
device_engines = importlib.util.module_from_spec(spec)
sys.modules["device_engines"] = device_engines
spec.loader.exec_module(device_engines)


def test_on_device_moves_a_scenario_and_keeps_the_rest(tmp_path: Path) -> None:
    out = Path(device_engines.on_device("scenarios/quickstart.yaml", tmp_path / "q.yaml", "cpu", "/models/x"))
    data = yaml.safe_load(out.read_text())
    original = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
    assert data["runtime"] == {**original["runtime"], "device": "cpu"}
    assert data["model"] == {**original["model"], "name": "/models/x"}
    assert data["federation"] == original["federation"] and data["data"] == original["data"]
    tiny = device_engines.on_device("scenarios/batched-tiny.yaml", tmp_path / "t.yaml", "cpu")
    assert load_scenario(tiny).model.name == "tiny-llama"  # still a valid scenario, model kept


def test_engines_check_is_skipped_without_the_carried_tokenizer(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_engines, "CARRY", tmp_path / "empty")
    out = device_engines.engines_check("cpu", tmp_path / "work")
    assert "--prepare" in out["skipped"] and not (tmp_path / "work").exists()
    monkeypatch.setattr(device_engines, "missing", lambda: ["flwr"])
    assert "flwr" in device_engines.engines_check("cpu", tmp_path / "work")["skipped"]


def test_random_smollm2_needs_the_prepared_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_engines, "CARRY", tmp_path)
    with pytest.raises(FileNotFoundError, match="--prepare"):
        device_engines.random_smollm2(tmp_path / "model")
