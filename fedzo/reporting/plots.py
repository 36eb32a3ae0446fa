"""Figures overlaying fedzo runs, built from run directories only.

Figures (file stems):

- ``accuracy_vs_time``   eval accuracy vs cumulative simulated wall-clock (federated runs)
- ``accuracy_vs_host_time``  eval accuracy vs this machine's wall-clock (every run)
- ``accuracy_vs_bytes``  eval accuracy vs cumulative bytes up + down (log x)
- ``accuracy_vs_round``  eval accuracy vs round
- ``memory_frontier``    largest model trainable per memory budget, BP vs ZO
- ``timeline[-LABEL]``   per-device timeline, one file per federated run

Accuracy lines carry their 95 % Wilson interval as a band where the runs recorded the
number of examples evaluated. A figure that no run has data for is skipped with a note
(e.g. a centralized run has no bytes and no simulated time). Figures are plain :class:`matplotlib.figure.Figure` objects, never pyplot
state, so PNGs are rendered by the Agg canvas and nothing global is touched: it is safe
to call :func:`plot_runs` at the end of ``fedzo run`` inside another program.
"""

from __future__ import annotations

import io
import math
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, PercentFormatter

from fedzo.atomic import write_whole
from fedzo.errors import ConfigError
from fedzo.reporting.rundir import MemoryFrontier, RoundRecord, Run, display_names, is_finite, load_run
from fedzo.reporting.timeline import timeline_figure
from fedzo.units import format_bytes, format_memory, format_params, time_unit

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

FORMATS = ("png", "svg", "pdf")
PNG_DPI = 150
RC_PARAMS: dict[RcKeyType, Any] = {"svg.hashsalt": "fedzo", "svg.fonttype": "none", "axes.titlesize": "medium"}

Note = Callable[[str], None]


@dataclass
class NamedFigure:
    """A built figure and the file stem it is saved under."""

    stem: str
    figure: Figure


def print_note(message: str) -> None:
    """Default note sink: one line on stdout."""
    print(f"note: {message}", file=sys.stdout)


def _colors(n: int) -> list[str]:
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def _x_or_zero(rec: RoundRecord, value: float | None) -> float | None:
    """A cumulative x value; the initial evaluation (round 0) starts at zero if unrecorded."""
    if is_finite(value):
        return float(value)
    return 0.0 if rec.round == 0 else None


def _accuracy_axes(ax: Axes, title: str) -> None:
    ax.set_ylabel("eval accuracy (%, band: 95 % interval)")
    # decimals chosen from the displayed range, so two ticks never print the same label
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)


@dataclass
class Curve:
    """One run's accuracy points: x, accuracy and its 95 % interval (None where unknown)."""

    label: str
    color: str
    xs: list[float]
    ys: list[float]
    lows: list[float | None]
    highs: list[float | None]


def _curves(runs: Sequence[Run], labels: Sequence[str], x_of: Callable[[RoundRecord], float | None]) -> list[Curve]:
    """One curve per run that has at least one point."""
    out = []
    for run, label, color in zip(runs, labels, _colors(len(runs)), strict=True):
        pts = [(x, r) for r in run.eval_rounds if (x := x_of(r)) is not None]
        if pts:
            out.append(Curve(label, color, [x for x, _ in pts], [float(r.eval_accuracy or 0.0) for _, r in pts],
                             [r.eval_accuracy_low for _, r in pts], [r.eval_accuracy_high for _, r in pts]))
    return out


def _line_figure(curves: list[Curve], scale: float = 1.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for c in curves:
        xs = [x / scale for x in c.xs]
        ax.plot(xs, c.ys, marker="o", markersize=3.5, linewidth=1.6, color=c.color, label=c.label)
        band = [(x, lo, hi) for x, lo, hi in zip(xs, c.lows, c.highs, strict=True) if lo is not None and hi is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=c.color,
                            alpha=0.15, linewidth=0)
    return fig, ax


def _time_figure(curves: list[Curve], xlabel: str, title: str) -> Figure | None:
    """Accuracy curves against a time axis in the unit that suits their longest run."""
    if not curves:
        return None
    unit, scale = time_unit(max(max(c.xs) for c in curves))
    fig, ax = _line_figure(curves, scale)
    ax.set_xlabel(f"{xlabel} ({unit})")
    ax.set_xlim(left=0)
    _accuracy_axes(ax, title)
    return fig


def accuracy_vs_time(runs: Sequence[Run], labels: Sequence[str], note: Note) -> Figure | None:
    """Eval accuracy vs cumulative simulated wall-clock, one line per (federated) run."""
    simulated = [r for r in runs if any(is_finite(x.sim_seconds) for x in r.rounds if x.round > 0)]
    curves = _curves(simulated, [lab for r, lab in zip(runs, labels, strict=True) if r in simulated],
                     lambda r: _x_or_zero(r, r.sim_seconds))
    for label in sorted(set(labels) - {c.label for c in curves}):
        note(f"{label}: no simulated time (a centralized run?); in accuracy vs host time only")
    return _time_figure(curves, "simulated wall-clock on the devices", "Accuracy vs simulated wall-clock")


def accuracy_vs_host_time(runs: Sequence[Run], labels: Sequence[str], note: Note) -> Figure | None:
    """Eval accuracy vs this machine's cumulative wall-clock (what the simulation cost)."""
    curves = _curves(runs, labels, lambda r: _x_or_zero(r, r.host_seconds))
    return _time_figure(curves, "host wall-clock, this machine", "Accuracy vs host wall-clock")


def accuracy_vs_bytes(runs: Sequence[Run], labels: Sequence[str], note: Note) -> Figure | None:
    """Eval accuracy vs cumulative bytes communicated (up + down), log x axis.

    Points at zero bytes (the initial model) cannot sit on a log axis and are left out;
    runs that communicated nothing (centralized training) are left out with a note.
    """
    communicated = [r for r in runs if any(x.bytes_total > 0 for x in r.rounds)]
    for run, label in zip(runs, labels, strict=True):
        if run not in communicated:
            note(f"{label}: no bytes communicated (centralized?); left out of accuracy vs bytes")
    if not communicated:
        return None
    curves = _curves(communicated, [lab for r, lab in zip(runs, labels, strict=True) if r in communicated],
                     lambda r: float(r.bytes_total))
    positive = [x for c in curves for x in c.xs if x > 0]
    if not positive:
        note("no evaluated round had communicated bytes yet; accuracy vs bytes figure skipped")
        return None
    lo, hi = min(positive), max(positive)
    start = lo / 4  # where a run's zero-byte start (no setup recorded) is drawn, labelled "0 B"
    for c in curves:
        c.xs = [x if x > 0 else start for x in c.xs]
    fig, ax = _line_figure(curves)
    ax.set_xscale("log")
    lo = min(lo, start) if any(x == start for c in curves for x in c.xs) else lo
    if math.log10(hi / lo) < 2.5:  # few decades: label 1-2-5 steps, not only powers of 10
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: "0 B" if v == start else format_bytes(v)))
    if lo == start:
        ax.set_xticks(sorted({start, *[t for t in ax.get_xticks() if lo <= t <= hi]}))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("bytes communicated (log scale)")
    _accuracy_axes(ax, "Accuracy vs bytes communicated (uplink + downlink, cumulative)")
    return fig


def accuracy_vs_round(runs: Sequence[Run], labels: Sequence[str], note: Note) -> Figure | None:
    """Eval accuracy vs round (for centralized runs: the evaluation index)."""
    curves = _curves(runs, labels, lambda r: float(r.round))
    if not curves:
        return None
    fig, ax = _line_figure(curves)
    ax.set_xlabel("round (centralized runs: evaluation interval)")
    ax.set_xlim(left=0)
    locator = ax.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # the default AutoLocator is one
        locator.set_params(integer=True)
    _accuracy_axes(ax, "Accuracy vs round")
    return fig


def _frontier_axes(ax: Axes, frontier: MemoryFrontier) -> None:
    budgets = list(frontier.budgets_bytes)
    ranked = sorted(frontier.models, key=lambda m: (m.params or 0.0, m.zo_bytes))
    use_params = all(is_finite(m.params) for m in frontier.models)
    width = 0.38
    styles = (("bp", "BP (backprop)", "#b0bec5", -width / 2), ("zo", "ZO (forward only)", "#1e88e5",
                                                              width / 2))
    for method, label, color, offset in styles:
        heights, names = [], []
        for budget in budgets:
            model = frontier.largest_fitting(budget, method)
            if model is None:
                heights.append(0.0)
                names.append("none fits")
            else:
                heights.append(float(model.params) if use_params and model.params is not None
                               else ranked.index(model) + 1.0)
                names.append(model.name)
        xs = [i + offset for i in range(len(budgets))]
        bars = ax.bar(xs, heights, width, color=color, edgecolor="#37474f", linewidth=0.5,
                      label=label)
        ax.bar_label(bars, labels=names, rotation=90, padding=3, fontsize=7)
    ax.set_xticks(range(len(budgets)), [format_memory(b) for b in budgets])
    ax.set_xlabel("device memory budget")
    if use_params:
        ax.set_ylabel("largest trainable model (parameters)")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_params(v)))
    else:
        ax.set_ylabel("largest trainable model (size rank)")
        ax.set_yticks(range(1, len(ranked) + 1), [m.name for m in ranked], fontsize=7)
    ax.margins(y=0.35)
    ax.set_title(f"Memory frontier ({frontier.family}, {frontier.dtype}): largest model trainable per budget")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def memory_frontier(runs: Sequence[Run], note: Note) -> Figure | None:
    """Largest model per memory budget, BP vs ZO; one panel per distinct frontier."""
    frontiers: list[MemoryFrontier] = []
    for run in runs:
        if run.frontier is not None and run.frontier not in frontiers:
            frontiers.append(run.frontier)
    if not frontiers:
        note("no run has memory_frontier.json; memory frontier figure skipped")
        return None
    fig = Figure(figsize=(8.0, 4.8 * len(frontiers)), layout="constrained")
    axes = fig.subplots(len(frontiers), 1, squeeze=False)[:, 0]
    for ax, frontier in zip(axes, frontiers, strict=True):
        _frontier_axes(ax, frontier)
    return fig


def build_figures(runs: Sequence[Run], note: Note = print_note) -> list[NamedFigure]:
    """Every figure that ``runs`` have data for; skipped figures are reported to ``note``."""
    labels = display_names(list(runs))
    figures: list[NamedFigure] = []
    if not any(run.eval_rounds for run in runs):
        note("no run has an eval accuracy in metrics.jsonl; accuracy figures skipped")
    else:
        for stem, builder in (
            ("accuracy_vs_time", accuracy_vs_time),
            ("accuracy_vs_host_time", accuracy_vs_host_time),
            ("accuracy_vs_bytes", accuracy_vs_bytes),
            ("accuracy_vs_round", accuracy_vs_round),
        ):
            fig = builder(runs, labels, note)
            if fig is None and stem == "accuracy_vs_bytes":
                note("no run communicated bytes; accuracy vs bytes figure skipped")
            if fig is not None:
                figures.append(NamedFigure(stem, fig))
    frontier_fig = memory_frontier(runs, note)
    if frontier_fig is not None:
        figures.append(NamedFigure("memory_frontier", frontier_fig))
    for run, label in zip(runs, labels, strict=True):
        fig = timeline_figure(run, label, note)
        if fig is not None:
            stem = "timeline" if len(runs) == 1 else f"timeline-{_slug(label)}"
            figures.append(NamedFigure(stem, fig))
    return figures


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Validate image formats given as ``"png,svg"`` or a sequence of names."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    names = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise ConfigError(
            f"--format: {', '.join(bad) or 'nothing given'} is not supported; "
            f"expected a comma-separated list of {', '.join(FORMATS)}"
        )
    return names


def save_figures(
    figures: Sequence[NamedFigure], out_dir: Path, formats: Sequence[str]
) -> list[Path]:
    """Write each figure as ``out_dir/STEM.FORMAT``; returns the written paths."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out_dir}: cannot create the output directory ({exc})") from exc
    written: list[Path] = []
    with matplotlib.rc_context(RC_PARAMS):
        for named in figures:
            for fmt in formats:
                path = out_dir / f"{named.stem}.{fmt}"
                metadata = {"Date": None} if fmt in ("svg", "pdf") else None
                buf = io.BytesIO()
                named.figure.savefig(buf, format=fmt, dpi=PNG_DPI, metadata=metadata)
                write_whole(path, buf.getvalue())  # whole or not at all (a full disk)
                written.append(path)
    return written


def plot_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    formats: Sequence[str] = ("png", "svg"),
    *,
    note: Note = print_note,
) -> list[Path]:
    """Load ``run_dirs``, draw every figure they have data for, save into ``out_dir``.

    This is what ``fedzo plot`` runs, and what ``fedzo run`` calls at the end of a run
    (typically with ``out_dir = RUN/plots``). Figures without data are skipped and
    reported through ``note`` (printed by default). Returns the written file paths.

    Raises:
        ConfigError: a run directory is missing or malformed, or a format is unknown.
    """
    fmts = parse_formats(formats)
    runs = [load_run(d) for d in run_dirs]
    if not runs:
        raise ConfigError("no run directories given; expected at least one RUN")
    with matplotlib.rc_context(RC_PARAMS):
        figures = build_figures(runs, note)
    return save_figures(figures, Path(out_dir), fmts)
