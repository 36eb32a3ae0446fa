"""`fedzo report RUN... [--out FILE]`: one self-contained HTML page comparing runs."""

from __future__ import annotations

import argparse
from pathlib import Path


def default_out_file(runs: list[str]) -> Path:
    """``RUN/report.html`` for one run on disk, ``./report.html`` for several or an archived one."""
    return Path(runs[0]) / "report.html" if len(runs) == 1 and Path(runs[0]).is_dir() else Path("report.html")


def run(args: argparse.Namespace) -> int:
    """Write the HTML report of ``args.runs`` and print its path."""
    from fedzo.archives import expand
    from fedzo.reporting.report import write_report  # matplotlib only when used

    runs = expand(args.runs)
    out = Path(args.out) if args.out else default_out_file(runs)
    print(write_report(runs, out))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `report` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page: comparison table and figures",
        description=(
            "Write one HTML page (figures embedded, no external files) with a table of "
            "run totals (accuracy, simulated and host time, bytes, peak client memory, "
            "model hash) and the figures of `fedzo plot`."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (in an experiment's runs.zip too; quote patterns there)")
    parser.add_argument(
        "--out", metavar="FILE", default=None,
        help="output HTML file (default: RUN/report.html for one run, ./report.html for several)",
    )
    parser.set_defaults(func=run)
