"""Reading and validating run directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedzo.errors import ConfigError
from fedzo.reporting.rundir import display_names, load_run


def test_load_federated_run(fed_run: Path) -> None:
    run = load_run(fed_run)
    assert run.name == "quickstart-zo"
    assert [r.round for r in run.rounds] == list(range(13))
    assert run.rounds[0].eval_accuracy == 0.5 and run.rounds[0].sim_seconds is None
    assert run.clients and run.is_federated
    assert {c.status for c in run.clients} >= {"ok", "late", "dropped", "offline"}
    assert run.frontier is not None and run.frontier.family == "smollm2"
    fitting = run.frontier.largest_fitting(2**30, "zo")
    assert fitting is not None and fitting.name == "smollm2-360m"
    assert run.frontier.largest_fitting(2**30, "bp") is None
    assert run.frontier.dtype == "fp32"  # a file without the key (written before 2026-12) is fp32
    doc = json.loads((fed_run / "memory_frontier.json").read_text())
    (fed_run / "memory_frontier.json").write_text(json.dumps({**doc, "dtype": "bf16"}))
    frontier = load_run(fed_run).frontier
    assert frontier is not None and frontier.dtype == "bf16" and frontier != run.frontier


def test_load_centralized_run(central_run: Path) -> None:
    run = load_run(central_run)
    assert not run.clients and not run.is_federated and run.frontier is None
    # best_accuracy is null in summary.json: filled from the metrics
    accuracies = [r.eval_accuracy for r in run.eval_rounds if r.eval_accuracy is not None]
    assert run.summary["best_accuracy"] == pytest.approx(max(accuracies))


def test_metrics_only_run_derives_summary_and_name(tmp_path: Path, jsonl: Any) -> None:
    root = tmp_path / "only-metrics"
    root.mkdir()
    jsonl(root / "metrics.jsonl", [
        {"kind": "round", "round": 1, "sim_seconds": 10.0, "bytes_up": 5, "eval_accuracy": 0.6},
        {"kind": "round", "round": 2, "sim_seconds": 20.0, "bytes_up": 9, "eval_accuracy": 0.55},
        {"kind": "client", "round": 2, "client": 5, "peak_memory_bytes": 7},
        {"kind": "future-kind", "whatever": 1},
    ])
    run = load_run(root)
    assert run.name == "only-metrics"
    assert run.summary["final_accuracy"] == 0.55 and run.summary["best_accuracy"] == 0.6
    assert run.summary["sim_seconds"] == 20.0 and run.summary["bytes_up"] == 9
    assert run.summary["bytes_down"] == 0 and run.summary["peak_client_memory_bytes"] == 7  # schema default


def test_round_bytes_are_the_running_totals_of_federated_runs(tmp_path: Path, jsonl: Any) -> None:
    """Federated servers write per-round bytes plus *_total; plots need the totals."""
    root = tmp_path / "fed"
    root.mkdir()
    jsonl(root / "metrics.jsonl", [
        {"kind": "round", "round": 1, "bytes_up": 100, "bytes_down": 10, "bytes_up_total": 100,
         "bytes_down_total": 10, "eval_accuracy": 0.6},
        {"kind": "round", "round": 2, "bytes_up": 100, "bytes_down": 30, "bytes_up_total": 200,
         "bytes_down_total": 40, "eval_accuracy": 0.7},
    ])
    rounds = load_run(root).rounds
    assert [(r.bytes_up_total, r.bytes_down_total, r.bytes_total) for r in rounds] == [
        (100, 10, 110), (200, 40, 240)]
    assert [r.bytes_up for r in rounds] == [100, 100]  # the round's own bytes


def test_scenario_name_is_the_fallback(tmp_path: Path, jsonl: Any) -> None:
    root = tmp_path / "r"
    root.mkdir()
    jsonl(root / "metrics.jsonl", [{"kind": "round", "round": 1}])
    (root / "scenario.yaml").write_text("name: from-scenario\n")
    assert load_run(root).name == "from-scenario"


def test_resumed_rounds_keep_the_last_line(tmp_path: Path, jsonl: Any) -> None:
    root = tmp_path / "r"
    root.mkdir()
    jsonl(root / "metrics.jsonl", [
        {"kind": "round", "round": 2, "eval_accuracy": 0.1},
        {"kind": "round", "round": 1},
        {"kind": "round", "round": 2, "eval_accuracy": 0.2},
    ])
    run = load_run(root)
    assert [r.round for r in run.rounds] == [1, 2] and run.rounds[1].eval_accuracy == 0.2


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such run directory"):
        load_run(tmp_path / "nope")


def test_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        load_run(f)


def test_not_a_run_directory(tmp_path: Path) -> None:
    expected = r"not a fedzo run directory \(no summary.json or metrics.jsonl\)"
    with pytest.raises(ConfigError, match=expected):
        load_run(tmp_path)


def test_malformed_line_names_file_and_line(fed_run: Path) -> None:
    metrics = fed_run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[4] = '{"kind": "round", "round": '
    metrics.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"metrics\.jsonl:5: malformed JSON"):
        load_run(fed_run)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            {"kind": "round", "round": 1, "sim_seconds": "fast"},
            "'sim_seconds' is 'fast': Input should be a valid number",
        ),
        ({"kind": "round"}, "no 'round' field"),
        ({"kind": "client", "round": 1}, "no 'client' field"),
        ({"round": 1}, "no 'kind'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_fields(tmp_path: Path, line: object, message: str) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    with pytest.raises(ConfigError) as info:
        load_run(root)
    assert "metrics.jsonl:1: " in str(info.value) and message in str(info.value)


def test_malformed_summary_and_frontier(fed_run: Path) -> None:
    (fed_run / "memory_frontier.json").write_text('{"models": []}')
    with pytest.raises(ConfigError, match="memory_frontier.json: 'models'"):
        load_run(fed_run)
    (fed_run / "summary.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"summary\.json:1: malformed JSON"):
        load_run(fed_run)


def test_display_names_disambiguate(tmp_path: Path, make_fed: Any) -> None:
    a = load_run(make_fed(tmp_path / "a", "same", frontier=False))
    b = load_run(make_fed(tmp_path / "b", "same", frontier=False))
    c = load_run(make_fed(tmp_path / "c", "other", frontier=False))
    assert display_names([a, b, c]) == ["same [a]", "same [b]", "other"]
