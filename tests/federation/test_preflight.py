"""`fedzo validate` opens what the run will open and reports every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from fedzo.cli import main


def _scenario(tmp_path, **data) -> str:
    doc = {"version": 2, "model": {"name": "tiny-llama"}, "runtime": {"device": "cpu", "threads": 1},
           "data": {"task": "synthetic-sentiment", "train_examples": 64, "eval_examples": 16, **data},
           "federation": {"num_clients": 4, "clients_per_round": 2, "rounds": 1, "local_steps": 1},
           "fleet": {"default_profile": "rpi5-2gb"}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_good_scenario_passes_every_part(tmp_path, capsys) -> None:
    assert main(["validate", _scenario(tmp_path)]) == 0
    out = capsys.readouterr().out
    for part in ("device: ok, training on cpu", "task: ok, synthetic-sentiment", "fleet: ok, 4 clients: 4 rpi5-2gb",
                 "model: ok, tiny-llama", "rpi5-2gb "):
        assert part in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_problems_the_schema_cannot_see_are_reported_together(tmp_path, capsys) -> None:
    csv = tmp_path / "reviews.csv"
    csv.write_text("review_text,verdict\n" + "".join(f"film {i},{'good' if i % 2 else 'bad'}\n" for i in range(40)))
    path = _scenario(tmp_path, task=str(csv))
    doc = yaml.safe_load(Path(path).read_text())
    doc["runtime"]["device"] = "cuda"
    doc["fleet"]["calibration"] = str(tmp_path / "missing.calibration.json")
    Path(path).write_text(yaml.safe_dump(doc))
    assert main(["validate", path]) == 2
    cap = capsys.readouterr()
    assert "model: not checked" in cap.out
    assert f"{path}: runtime.device: 'cuda' requested but no CUDA device" in cap.err
    assert f"cannot tell the label column of {str(csv)!r} among review_text, verdict" in cap.err
    assert "missing.calibration.json: no such calibration file" in cap.err
    assert "Traceback" not in cap.err
    assert main(["validate", "--quick", path]) == 0  # the schema alone is fine


def test_memory_refusal_is_found_before_the_run(tmp_path, capsys) -> None:
    path = _scenario(tmp_path, batch_size=4096, max_length=512)
    doc = yaml.safe_load(Path(path).read_text())
    doc["fleet"]["default_profile"] = "phone-midrange"
    doc["optimizer"] = {"name": "fo-adam"}
    Path(path).write_text(yaml.safe_dump(doc))
    assert main(["validate", path]) == 2
    assert "fleet.memory_policy: refuse" in capsys.readouterr().err
