"""`fedzo memory` command (driven through its own parser)."""

from __future__ import annotations

import argparse
import json

import pytest

from fedzo.commands import memory
from fedzo.devices.architectures import FAMILIES, model_config
from fedzo.devices.memory import estimate_memory


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    memory.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["memory", *argv])
    return int(args.func(args))


def test_json_and_largest_fitting(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--model", "smollm2-135m", "--batch", "8", "--seq", "128", "--budget", "8GB",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["zo"]["total"] < out["bp"]["total"]
    family = FAMILIES["causal-lm"]

    def fitting(mode: str) -> list[str]:
        opt = "adam" if mode == "bp" else "sgd"  # the command's defaults: BP Adam, ZO-SGD, last-position logits
        return [m for m in family if estimate_memory(
            model_config(m), mode, batch=8, seq=128, optimizer=opt, logits="last").total <= 8e9]  # type: ignore[arg-type]

    assert out["largest_fitting"] == {"bp": fitting("bp")[-1], "zo": fitting("zo")[-1]}
    # ZO fits a larger model than BP at the same budget.
    assert family.index(out["largest_fitting"]["zo"]) > family.index(out["largest_fitting"]["bp"])


def test_table_with_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["--model", "minilm-l6", "--device", "phone-midrange"]) == 0
    text = capsys.readouterr().out
    assert "peak (total)" in text and "on phone-midrange" in text


def test_logits_are_priced_as_fedzo_scores_them_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    """By default both modes keep the answer position's logits, as a run's fleet check prices
    them; ``--logits full`` prices whole-sequence language-model fine-tuning."""
    base = ["--model", "smollm2-135m", "--batch", "8", "--seq", "64", "--json"]
    assert _run(base) == 0
    last = json.loads(capsys.readouterr().out)
    assert _run([*base, "--logits", "full"]) == 0
    full = json.loads(capsys.readouterr().out)
    cfg = model_config("smollm2-135m")
    for mode in ("bp", "zo"):
        opt = "adam" if mode == "bp" else "sgd"
        for out, logits in ((last, "last"), (full, "full")):
            assert out[mode]["total"] == estimate_memory(cfg, mode, batch=8, seq=64, optimizer=opt,  # type: ignore[arg-type]
                                                         logits=logits).total  # type: ignore[arg-type]
    assert full["bp"]["logits"] > 60 * last["bp"]["logits"] and last["logits"] == "last"

