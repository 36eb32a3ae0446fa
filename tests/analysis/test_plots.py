"""Figures from run directories: files written, skips noted, CLI behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import fedzo.cli
from fedzo.errors import ConfigError
from fedzo.reporting.plots import parse_formats, plot_runs

STEMS = ("accuracy_vs_time", "accuracy_vs_bytes", "accuracy_vs_round", "memory_frontier")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`fedzo.cli.main` with only the analysis commands registered.

    The other command modules pull in torch/Flower (and may not exist yet in a partial
    checkout); the analysis commands must not depend on them.
    """
    monkeypatch.setattr(
        fedzo.cli, "COMMAND_MODULES", ("fedzo.commands.plot", "fedzo.commands.report")
    )
    return fedzo.cli.main


def _assert_image(path: Path) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small"
    head = path.read_bytes()[:200]
    if path.suffix == ".png":
        assert head.startswith(b"\x89PNG")
    else:
        assert b"<svg" in path.read_bytes()[:2000] or b"<?xml" in head


def test_plot_runs_two_runs(fed_run: Path, central_run: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    out = tmp_path / "out"
    written = plot_runs([fed_run, central_run], out, note=notes.append)
    names = {p.name for p in written}
    for stem in STEMS:
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert {"timeline-quickstart-zo.png", "timeline-quickstart-zo.svg"} <= names
    assert not any("central" in n for n in names if n.startswith("timeline"))
    for path in written:
        _assert_image(path)
    svg = (out / "accuracy_vs_bytes.svg").read_text()
    assert "bytes communicated (log scale)" in svg and "central-bp" not in svg
    assert "quickstart-zo" in (out / "accuracy_vs_time.svg").read_text()
    assert any("central-bp" in n and "bytes" in n for n in notes)
    assert any("central-bp" in n and "timeline" in n for n in notes)


def test_centralized_only_skips_bytes_frontier_timeline(central_run: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    written = plot_runs([central_run], tmp_path / "o", formats=("png",), note=notes.append)
    assert sorted(p.name for p in written) == ["accuracy_vs_host_time.png", "accuracy_vs_round.png"]
    assert any("no simulated time" in n for n in notes)
    assert any("memory_frontier.json" in n for n in notes)
    assert any("accuracy vs bytes figure skipped" in n for n in notes)


def test_timeline_caps_clients(make_fed: Any, tmp_path: Path) -> None:
    run = make_fed(tmp_path / "big", "fleet", rounds=2, clients=60, per_round=50, frontier=False)
    written = plot_runs([run], tmp_path / "o", formats=("svg",), note=lambda _: None)
    svg = (tmp_path / "o" / "timeline.svg").read_text()
    assert tmp_path / "o" / "timeline.svg" in written
    clients = {ln.split('"client": ')[1].split(",")[0]
               for ln in (run / "metrics.jsonl").read_text().splitlines() if '"client": ' in ln}
    assert len(clients) > 40
    assert f"showing the first 40 of {len(clients)} clients" in svg
    assert "too thin to see" in svg  # transfers of ~1 s next to minutes of compute


def test_svg_output_is_deterministic(fed_run: Path, tmp_path: Path) -> None:
    plot_runs([fed_run], tmp_path / "a", formats=("svg",), note=lambda _: None)
    plot_runs([fed_run], tmp_path / "b", formats=("svg",), note=lambda _: None)
    for name in ("accuracy_vs_time.svg", "timeline.svg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_parse_formats() -> None:
    assert parse_formats("png, SVG,png") == ("png", "svg")
    with pytest.raises(ConfigError, match="jpg is not supported"):
        parse_formats("png,jpg")


def test_cli_plot_default_out_dir(
    cli: Any, fed_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["plot", str(fed_run), "--format", "png"]) == 0
    assert (fed_run / "plots" / "accuracy_vs_time.png").is_file()
    assert (fed_run / "plots" / "timeline.png").is_file()
    assert not (fed_run / "plots" / "accuracy_vs_time.svg").exists()
    assert "accuracy_vs_time.png" in capsys.readouterr().out


def test_cli_plot_several_runs_default_to_cwd(
    cli: Any, fed_run: Path, central_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli(["plot", str(fed_run), str(central_run)]) == 0
    assert (tmp_path / "plots" / "accuracy_vs_round.svg").is_file()


@pytest.mark.parametrize("command", ["plot", "report"])
def test_cli_not_a_run_dir(
    cli: Any, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli([command, str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"fedzo {command}: error: {empty}: not a fedzo run directory" in err
    assert "Traceback" not in err


def test_cli_malformed_line(
    cli: Any, fed_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (fed_run / "metrics.jsonl").open("a") as f:
        f.write("{oops\n")
    n = len((fed_run / "metrics.jsonl").read_text().splitlines())
    assert cli(["plot", str(fed_run), "--out", str(tmp_path / "o")]) == 2
    assert f"metrics.jsonl:{n}: malformed JSON" in capsys.readouterr().err


def test_cli_bad_format(cli: Any, fed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["plot", str(fed_run), "--format", "gif"]) == 2
    assert "--format: gif is not supported" in capsys.readouterr().err
