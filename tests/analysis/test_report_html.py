"""The HTML report: self-contained, escaped, with the comparison table."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

import fedzo.cli
from fedzo.reporting.report import write_report


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`fedzo.cli.main` with only the analysis commands registered."""
    monkeypatch.setattr(
        fedzo.cli, "COMMAND_MODULES", ("fedzo.commands.plot", "fedzo.commands.report")
    )
    return fedzo.cli.main


def test_report_is_self_contained(
    cli: Any, fed_run: Path, central_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r" / "report.html"
    assert cli(["report", str(fed_run), str(central_run), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # nothing fetched from elsewhere: no external src/href, no scripts or stylesheets
    assert not re.search(r'src="(?!data:)', page)
    assert 'src="http' not in page and "href=" not in page
    assert "<script" not in page and "<link" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 6  # simulated time, host time, bytes, round, frontier, one timeline
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)


def test_report_table_values(fed_run: Path, central_run: Path, tmp_path: Path) -> None:
    path = write_report([fed_run, central_run], tmp_path / "x.html", note=lambda _: None)
    page = path.read_text(encoding="utf-8")
    summary = json.loads((fed_run / "summary.json").read_text())
    assert "quickstart-zo" in page and "central-bp" in page
    assert "smollm2-135m" in page and "zo-sgd" in page and "fo-adam" in page
    assert f"{100 * summary['final_accuracy']:.2f} %" in page
    assert "ab12cd34ab12" in page and "f00df00df00d" in page  # sha256, shortened
    assert "MiB" in page  # peak client memory of the federated run
    assert "left out of accuracy vs bytes" in page  # the notes section


def test_report_escapes_text(make_fed: Any, tmp_path: Path) -> None:
    run = make_fed(tmp_path / "evil", '<script>alert("x")</script>', frontier=False)
    page = write_report([run], tmp_path / "e.html", note=lambda _: None).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_report_default_out_for_one_run(cli: Any, central_run: Path) -> None:
    assert cli(["report", str(central_run)]) == 0
    assert (central_run / "report.html").stat().st_size > 10_000
