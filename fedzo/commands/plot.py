"""`fedzo plot RUN... [--out DIR] [--format png,svg]`: overlay runs in figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def default_out_dir(runs: list[str]) -> Path:
    """``RUN/plots`` for one run on disk, ``./plots`` for several or an archived one."""
    return Path(runs[0]) / "plots" if len(runs) == 1 and Path(runs[0]).is_dir() else Path("plots")


def run(args: argparse.Namespace) -> int:
    """Draw the figures of ``args.runs`` into ``args.out``; prints each written file."""
    from fedzo.archives import expand
    from fedzo.reporting.plots import parse_formats, plot_runs  # matplotlib only when used

    runs = expand(args.runs)
    formats = parse_formats(args.format)
    out = Path(args.out) if args.out else default_out_dir(runs)
    for path in plot_runs(runs, out, formats):
        print(path)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `plot` sub-command."""
    parser = subparsers.add_parser(
        "plot",
        help="overlay runs: accuracy vs time/bytes/round, memory frontier, device timelines",
        description=(
            "Overlay fedzo run directories: accuracy vs simulated wall-clock, vs bytes "
            "communicated and vs round; the memory frontier (BP vs ZO) when a run has "
            "memory_frontier.json; a per-device timeline for each federated run. "
            "Figures without data are skipped with a note."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (in an experiment's runs.zip too; quote patterns there)")
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="output directory (default: RUN/plots for one run, ./plots for several)",
    )
    parser.add_argument(
        "--format", default="png,svg", metavar="FMT[,FMT]",
        help="comma-separated image formats: png, svg, pdf (default: png,svg)",
    )
    parser.set_defaults(func=run)
